#!/usr/bin/env python3
"""Figures of the flow-table benchmark (flows-run.sh): flows-analyze.py
VARIANT... reads OUT/a-VARIANT, b-VARIANT, c-VARIANT (OUT: $OUT or
target/bench/flows) and prints (a) RSS over time, (b) CPU with the table
idle, (c) intake under a new-flow flood."""
import json, os, statistics, sys
out = os.environ.get('OUT', 'target/bench/flows')
def samples(r):
    rows=[l.split() for l in open(f'{out}/{r}/samples.txt').read().splitlines()[1:]]
    return [(float(t), int(rss), int(c)) for t,rss,c in rows]
def summary(r):
    lines=[json.loads(l) for l in open(f'{out}/{r}/stdout.json')]
    return lines[-1], [l for l in lines if l['type']=='rates']
def sent(r):
    return int(open(f'{out}/{r}/sent.txt').read().split()[0])
for v in sys.argv[1:]:
    print('=====', v)
    # (a) RSS
    r=f'a-{v}'
    try:
        s=samples(r); su,rates=summary(r)
        m1=[x for x in s if x[0]>=60]
        print('(a) sent',sent(r),'rss MiB at 0/30/60/90/120/150/180:', [round(min(s,key=lambda x:abs(x[0]-t))[1]/1024,1) for t in (0,30,60,90,120,150,180)],
              'after 60 s min/max', round(min(x[1] for x in m1)/1024,1), round(max(x[1] for x in m1)/1024,1),
              'tracked', su['flows_tracked'], su.get('flows_tracked_exact'), 'insert_failed', su['counters']['flow_insert_failed'], 'in_table max', max(l['flows_in_table'] for l in rates),
              'pps median', round(statistics.median(l['pps'] for l in rates[5:-2])))
    except FileNotFoundError as e: print(e)
    r=f'b-{v}'
    try:
        s=samples(r); su,rates=summary(r)
        idle=[x for x in s if x[0]>=25]
        cpu=[ (b[2]-a[2])/(b[0]-a[0]) for a,b in zip(idle,idle[1:])]
        print('(b) sent',sent(r),'in_table',rates[-1]['flows_in_table'],'cpu % per 5 s after 25 s:',[round(c,1) for c in cpu],'median',round(statistics.median(cpu),1),'rss MiB',round(idle[-1][1]/1024,1),
              'tracked', su['flows_tracked'], 'insert_failed', su['counters']['flow_insert_failed'])
    except FileNotFoundError as e: print(e)
    r=f'c-{v}'
    try:
        s=samples(r); su,rates=summary(r)
        pps=[l['pps'] for l in rates if l['pps']>1000]
        cpu=[ (b[2]-a[2])/(b[0]-a[0]) for a,b in zip(s,s[1:])]
        print('(c) sent',sent(r),'pps median',round(statistics.median(pps)),'in_table end',rates[-1]['flows_in_table'],'tracked',su['flows_tracked'],'insert_failed',su['counters']['flow_insert_failed'],'records',su['counters']['flow_records'],
              'cpu% median', round(statistics.median(cpu)), 'rss MiB end', round(s[-1][1]/1024,1))
    except FileNotFoundError as e: print(e)
