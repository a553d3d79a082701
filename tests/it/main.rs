//! Integration tests: the real `pgha` binary (`CARGO_BIN_EXE_pgha`) run as separate processes
//! on 127.0.0.1 with free ports in temp dirs (see `harness`), each data node with its own
//! PostgreSQL 15. The scenarios cover the consensus layer (formation, failover, restart,
//! membership changes, certificates, bad input) and Postgres under the HA loop (`postgres`).
//! Run with `cargo test --test it -- --test-threads=2` (as root, as in CI, nodes drop to the
//! `postgres` user); `PGHA_IT_KEEP=1` keeps the temp dirs and node
//! logs. Several scenarios began as reproductions of bugs they found (membership removal,
//! relayed leadership transfer, `--force-new-cluster` as root and after a failed attempt).

mod harness;

mod api_states;
mod config;
mod consensus;
mod haproxy;
mod input;
mod membership;
mod operations;
mod postgres;
mod proxy;
mod recovery;
mod security;
mod sync;
mod systemd;
