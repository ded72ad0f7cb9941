#!/usr/bin/env python3
"""Inclusive shares of the frames bench/PERF.md tabulates, from a perf profile with call graphs.

    perf record -F 499 -g --call-graph dwarf,16384 -p <licensd pid> -- sleep 10
    perf script | python3 bench/perf-shares.py

A sample counts for a row when any frame of its stack matches the row's pattern (the last row:
when its leaf frame does); shares are of all the samples read.
"""
import sys, re
pats = [(n, re.compile(p)) for n, p in [
 ("validate handler (axum Handler::call)", r"axum::handler::Handler<"),
 ("Session::issue", r"Session::issue"),
 ("Ed25519 signing", r"SigningKey as signature::signer::Signer"),
 ("hot model tail (HotRunner::run)", r"HotRunner::run"),
 ("SQL read models (SqlRunner::step)", r"SqlRunner::step"),
 ("log reads (EventStore>::read_all)", r"EventStore>::read_all"),
 ("log pages (read_log_page)", r"read_log_page"),
 ("group-commit writer (writer::run)", r"licensd_commands::writer::run"),
 ("sqlx pool ping", r"::ping"),
 ("fdatasync", r"fdatasync"),
 ("sqlite3_step", r"sqlite3_step"),
 ("SQLite argument binding (SqliteArguments::bind)", r"SqliteArguments::bind"),
 ("hyper dispatcher", r"hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_catch"),
 ("axum per-request service clones (clone_box)", r"boxed_clone_sync::CloneService<R>>::clone_box"),
 ("allocator (mi_/malloc/free)", r"^(_?mi_|__GI___libc_malloc|_int_malloc|malloc|free|_int_free|cfree)"),
 ("futex (kernel)", r"__x64_sys_futex"),
 ("TCP send (kernel)", r"__x64_sys_sendto|tcp_sendmsg"),
]]
leafpats = [("finish_task_switch (self)", re.compile(r"finish_task_switch"))]
total = 0; counts = {n: 0 for n, _ in pats + leafpats}; comm = {}
cur = []; head = None
def flush():
    global total
    if head is None: return
    total += 1
    c = head.split()[0]
    comm[c] = comm.get(c, 0) + 1
    for n, p in pats:
        if any(p.search(f) for f in cur): counts[n] += 1
    for n, p in leafpats:
        if cur and p.search(cur[0]): counts[n] += 1
for line in sys.stdin:
    line = line.rstrip('\n')
    if not line.strip():
        flush(); cur = []; head = None; continue
    if line[0] in ' \t':
        parts = line.strip().split(' ', 1)
        if len(parts) == 2: cur.append(parts[1])
    else:
        head = line
flush()
print("samples", total)
for c, v in sorted(comm.items(), key=lambda x: -x[1])[:4]: print(f"  thread {c}: {100*v/total:.1f}%")
for n, _ in pats + leafpats: print(f"  {n}: {100*counts[n]/total:.1f}%")
