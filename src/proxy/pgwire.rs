//! The little of the Postgres protocol the proxy speaks, only to refuse a client with a reason
//! it shows (`psql: error: … FATAL: pgha: no primary …`) instead of a bare reset. A routed
//! connection is never parsed: bytes are copied as they come, so TLS negotiated between the
//! client and Postgres passes through unchanged.
//!
//! A client opens with an `SSLRequest` or `GSSENCRequest` (answered `N`: not here) or directly
//! with its `StartupMessage`; after that, an `ErrorResponse` ends the conversation.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SSL_REQUEST: u32 = 80877103;
const GSSENC_REQUEST: u32 = 80877104;
const CANCEL_REQUEST: u32 = 80877102;
/// Startup packets are small; anything bigger is not a Postgres client.
const MAX_STARTUP: usize = 10_000;
/// A refused client gets this long to send its startup packet.
const REFUSE_READ: Duration = Duration::from_secs(5);

/// SQLSTATE 57P03 `cannot_connect_now`: no primary (yet), no replica, backend unreachable.
pub const CANNOT_CONNECT_NOW: &str = "57P03";
/// SQLSTATE 53300 `too_many_connections`.
pub const TOO_MANY_CONNECTIONS: &str = "53300";

/// An `ErrorResponse` with severity FATAL, the SQLSTATE and the message.
pub fn error_response(sqlstate: &str, message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (code, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', sqlstate), (b'M', message)] {
        fields.push(code);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&((fields.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&fields);
    out
}

/// What a client's first packet asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Opening {
    /// SSL or GSS encryption: answer `N`, then the startup packet follows.
    Encryption,
    /// A cancel request: no answer is expected.
    Cancel,
    /// The startup packet itself.
    Startup,
}

/// Reads a packet's header (length, code) as the opening of a session.
pub fn opening(len: u32, code: u32) -> Result<Opening, String> {
    if !(8..=MAX_STARTUP as u32).contains(&len) {
        return Err(format!("a first packet of {len} bytes is not a Postgres client's"));
    }
    Ok(match code {
        SSL_REQUEST | GSSENC_REQUEST if len == 8 => Opening::Encryption,
        CANCEL_REQUEST => Opening::Cancel,
        _ => Opening::Startup,
    })
}

/// Ends `client`'s session with an error the client shows. Best effort: a client that sends
/// nothing or garbage just gets the connection closed.
pub async fn refuse(client: &mut TcpStream, sqlstate: &str, message: &str) {
    let _ = tokio::time::timeout(REFUSE_READ, async {
        for _ in 0..3 {
            let mut head = [0u8; 8];
            client.read_exact(&mut head).await?;
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            match opening(len, code) {
                Ok(Opening::Encryption) => client.write_all(b"N").await?,
                Ok(Opening::Cancel) => return Ok(()),
                Ok(Opening::Startup) => {
                    let mut rest = vec![0u8; len as usize - 8];
                    client.read_exact(&mut rest).await?;
                    client.write_all(&error_response(sqlstate, message)).await?;
                    return client.flush().await;
                }
                Err(_) => return Ok(()),
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    let _ = client.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_is_a_well_formed_message() {
        let m = error_response("57P03", "pgha: no primary");
        assert_eq!(m[0], b'E');
        let len = u32::from_be_bytes([m[1], m[2], m[3], m[4]]) as usize;
        assert_eq!(len, m.len() - 1, "length counts itself, not the type byte");
        let body = &m[5..];
        assert_eq!(body, b"SFATAL\0VFATAL\0C57P03\0Mpgha: no primary\0\0");
    }

    #[test]
    fn openings_are_told_apart() {
        let cases = [
            ((8, SSL_REQUEST), Ok(Opening::Encryption)),
            ((8, GSSENC_REQUEST), Ok(Opening::Encryption)),
            ((16, CANCEL_REQUEST), Ok(Opening::Cancel)),
            ((41, 196608), Ok(Opening::Startup)),
            ((4, 196608), Err(())),
            ((1 << 20, 196608), Err(())),
        ];
        for ((len, code), want) in cases {
            assert_eq!(opening(len, code).map_err(|_| ()), want, "{len} {code}");
        }
    }
}
