//! Hidden `pgha resolve NAME...`: prints the addresses pgha itself would connect to for each
//! name (`host` or `host:port`), one per line, as `sys::resolve` finds them without libc. For
//! operators comparing with `getent ahosts`, and for the test that the static binary resolves
//! `localhost` and names from `/etc/hosts` (scripts/test-packages.sh).

use crate::sys::resolve::{self, Resolver};
use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct ResolveArgs {
    /// Host names or host:port addresses
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub async fn run(args: ResolveArgs) -> Result<()> {
    let resolver = Resolver::system();
    for name in &args.names {
        if resolve::split_host_port(name).is_ok() || name.parse::<std::net::SocketAddr>().is_ok() {
            for addr in resolver.resolve(name).await? {
                println!("{name} {addr}");
            }
        } else {
            for ip in resolver.lookup(name).await? {
                println!("{name} {ip}");
            }
        }
    }
    Ok(())
}
