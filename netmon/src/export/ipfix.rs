//! The `--ipfix` exporter: a sink that turns the monitor's flow changes
//! into records ([`IpfixFlows`]), encodes them (RFC 7011,
//! [`Encoder`]) and sends each message in one UDP datagram to the
//! collector.
//!
//! UDP has no session, so the templates go in the first message and again
//! every [`TEMPLATE_REFRESH`] (RFC 7011 section 8.4: a collector that
//! started later, or lost them, learns them within that time). A send that
//! fails (no collector listening: ICMP port unreachable) loses that
//! message; netmon says so once on stderr, counts the records lost and
//! keeps going, since counting must not depend on the collector.

use std::{
    net::{SocketAddr, ToSocketAddrs, UdpSocket},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};

use crate::{
    UsageError,
    report::{
        FlowChanges, Interval, Link, Sink, Summary,
        ipfix::IpfixFlows,
        ipfix_wire::{Direction, Encoder},
    },
};

/// How often the templates are sent again.
pub const TEMPLATE_REFRESH: Duration = Duration::from_secs(60);
/// Largest message: within a 1500-byte path MTU with IPv6 and UDP headers.
const MAX_MESSAGE: usize = 1400;

/// Resolves `--ipfix HOST:PORT` to the collector's address.
pub fn resolve(target: &str) -> Result<SocketAddr> {
    let mut addrs = target.to_socket_addrs().map_err(|e| {
        UsageError(format!(
            "--ipfix {target}: {e}; write the collector as HOST:PORT (e.g. 127.0.0.1:4739)"
        ))
    })?;
    addrs
        .next()
        .ok_or_else(|| UsageError(format!("--ipfix {target}: no address")).into())
}

pub struct IpfixSink {
    socket: UdpSocket,
    collector: SocketAddr,
    flows: IpfixFlows,
    encoder: Encoder,
    templates_sent: Option<Instant>,
    /// Messages that could not be sent, and the records in them.
    lost_messages: u64,
    lost_records: u64,
}

impl IpfixSink {
    /// A sink sending to `collector` for observation domain `domain`.
    pub fn new(collector: SocketAddr, domain: u32, active_timeout: Duration) -> Result<Self> {
        let local: SocketAddr = if collector.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).context("cannot open a UDP socket for --ipfix")?;
        socket
            .connect(collector)
            .with_context(|| format!("cannot send IPFIX to {collector}"))?;
        Ok(IpfixSink {
            socket,
            collector,
            flows: IpfixFlows::new(
                u64::try_from(active_timeout.as_nanos()).unwrap_or(u64::MAX),
                Direction::Ingress,
            ),
            encoder: Encoder::new(domain, MAX_MESSAGE),
            templates_sent: None,
            lost_messages: 0,
            lost_records: 0,
        })
    }

    fn send(&mut self, changes: &FlowChanges) {
        let records = self.flows.update(changes);
        let templates = self
            .templates_sent
            .is_none_or(|t| t.elapsed() >= TEMPLATE_REFRESH);
        if records.is_empty() && !templates {
            return;
        }
        let export_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        for msg in self.encoder.messages(export_time, &records, templates) {
            if let Err(e) = self.socket.send(&msg.bytes) {
                if self.lost_messages == 0 {
                    log::warn!(
                        "cannot send IPFIX to {}: {e}; messages are lost until the collector \
                         listens (netmon says how many at the end)",
                        self.collector
                    );
                }
                self.lost_messages += 1;
                self.lost_records += u64::from(msg.records);
            }
        }
        if templates {
            self.templates_sent = Some(Instant::now());
        }
    }
}

impl Sink for IpfixSink {
    fn interval(&mut self, _interval: &Interval) -> Result<()> {
        Ok(())
    }
    fn link(&mut self, _link: &Link) -> Result<()> {
        Ok(())
    }
    fn flows(&mut self, changes: &FlowChanges) -> Result<()> {
        self.send(changes);
        Ok(())
    }
    fn summary(&mut self, _summary: &Summary) -> Result<()> {
        if self.lost_messages > 0 {
            log::warn!(
                "{} IPFIX messages ({} flow records) to {} could not be sent",
                self.lost_messages,
                self.lost_records,
                self.collector
            );
        }
        Ok(())
    }
}
