/* flows-run.sh's new-flow sender: UDP/IPv4 frames on an AF_PACKET socket, each from a
 * (203.0.113.x, port) source not used before in this run, to
 * 198.51.100.1:9. Paced to RATE frames/s in batches of 64 (sendmmsg);
 * stops after COUNT frames or DURATION s, whichever first. Prints the
 * number of frames the kernel accepted. With a sixth argument FLOWS, frame
 * i is of flow i % FLOWS: the same FLOWS flows over and over (live-cost.sh). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define B 64
#define LEN 60

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static uint16_t csum(const uint8_t *p, int n) {
    uint32_t s = 0;
    for (int i = 0; i < n; i += 2) s += (p[i] << 8) | p[i + 1];
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return ~s & 0xffff;
}

int main(int argc, char **argv) {
    if (argc != 6 && argc != 7) { fprintf(stderr, "usage: send IFACE DSTMAC RATE COUNT DURATION [FLOWS]\n"); return 2; }
    unsigned long flows = argc == 7 ? strtoul(argv[6], 0, 10) : 0;
    unsigned mac[6];
    sscanf(argv[2], "%x:%x:%x:%x:%x:%x", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4], &mac[5]);
    double rate = atof(argv[3]), duration = atof(argv[5]);
    unsigned long count = strtoul(argv[4], 0, 10);
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_ifindex = if_nametoindex(argv[1])};
    if (fd < 0 || !sll.sll_ifindex || bind(fd, (void *)&sll, sizeof sll)) { perror("socket"); return 1; }
    static uint8_t frames[B][LEN];
    struct iovec iov[B];
    struct mmsghdr msg[B];
    memset(msg, 0, sizeof msg);
    for (int j = 0; j < B; j++) {
        uint8_t *f = frames[j];
        for (int k = 0; k < 6; k++) f[k] = mac[k];
        uint8_t src[6] = {2, 0, 0, 0, 0, 2};
        memcpy(f + 6, src, 6);
        f[12] = 8; f[13] = 0;
        uint8_t *ip = f + 14;
        ip[0] = 0x45; ip[2] = 0; ip[3] = 46; ip[6] = 0x40; ip[8] = 64; ip[9] = 17;
        ip[12] = 203; ip[13] = 0; ip[14] = 113;
        ip[16] = 198; ip[17] = 51; ip[18] = 100; ip[19] = 1;
        uint8_t *udp = ip + 20;
        udp[2] = 0; udp[3] = 9; udp[4] = 0; udp[5] = 26;
        memset(udp + 8, 0x5a, 18);
        iov[j].iov_base = f; iov[j].iov_len = LEN;
        msg[j].msg_hdr.msg_iov = &iov[j]; msg[j].msg_hdr.msg_iovlen = 1;
    }
    double start = now(), end = start + duration;
    unsigned long sent = 0;
    while (sent < count) {
        int n = count - sent < B ? (int)(count - sent) : B;
        for (int j = 0; j < n; j++) {
            unsigned long i = flows ? (sent + j) % flows : sent + j;
            uint8_t *ip = frames[j] + 14;
            ip[15] = i & 0xff;
            ip[10] = ip[11] = 0;
            uint16_t c = csum(ip, 20);
            ip[10] = c >> 8; ip[11] = c & 0xff;
            uint16_t port = 1024 + ((i >> 8) % 64512);
            ip[20] = port >> 8; ip[21] = port & 0xff;
        }
        int r = sendmmsg(fd, msg, n, 0);
        if (r <= 0) { usleep(100); continue; }
        sent += r;
        double t = now();
        if (t >= end) break;
        double ahead = start + sent / rate - t;
        if (ahead > 0) { struct timespec ts = {(time_t)ahead, (long)((ahead - (time_t)ahead) * 1e9)}; nanosleep(&ts, 0); }
    }
    printf("%lu\n", sent);
    return 0;
}
