//! A DNS stub client: one question (A or AAAA) to one recursive server, over UDP with a retry
//! over TCP when the answer is truncated (RFC 1035, RFC 7766). Input: a fully qualified name,
//! the record type, the server and a timeout; output: the addresses of the name, following the
//! CNAME chain inside the answer, or why there are none. It does only what a stub behind a
//! recursive resolver needs — no recursion, no caching, no EDNS, no DNSSEC — and it never calls
//! libc (STACK.md item 2). Query ids come from the OS random source, so an off-path attacker
//! cannot guess them; the socket is connected, so only the asked server's datagrams arrive.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The address record types pgha asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordType {
    A,
    Aaaa,
}

impl RecordType {
    fn code(self) -> u16 {
        match self {
            RecordType::A => 1,
            RecordType::Aaaa => 28,
        }
    }
}

const TYPE_CNAME: u16 = 5;
const CLASS_IN: u16 = 1;
const HEADER_LEN: usize = 12;
/// Longest CNAME chain followed inside one answer.
const MAX_CHAIN: usize = 8;
/// Compression pointers followed while reading one name (a loop guard).
const MAX_POINTERS: usize = 32;
/// A UDP answer without EDNS is at most 512 bytes; a larger buffer costs nothing.
const UDP_BUFFER: usize = 4096;

/// What one server said about one question.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The name exists; these are its addresses of the asked type (possibly none).
    Addresses(Vec<IpAddr>),
    /// NXDOMAIN: the name does not exist.
    NoSuchName,
}

/// Why a server gave no usable answer; the resolver then asks the next server.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsError {
    #[error("{server}: no answer within {timeout:?}")]
    Timeout { server: SocketAddr, timeout: Duration },
    #[error("{server}: {detail}")]
    Io { server: SocketAddr, detail: String },
    #[error("{server}: answered with error code {rcode}")]
    ServerFailure { server: SocketAddr, rcode: u8 },
    #[error("{server}: malformed answer ({detail})")]
    Malformed { server: SocketAddr, detail: &'static str },
}

/// Encodes a recursive query for `name`, or `None` if `name` is no valid DNS name (an empty
/// label, a label over 63 bytes, a name over 253 bytes).
pub fn encode_query(id: u16, name: &str, rtype: RecordType) -> Option<Vec<u8>> {
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let mut msg = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&0x0100u16.to_be_bytes()); // RD: recursion desired
    msg.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 || !label.is_ascii() {
            return None;
        }
        msg.push(label.len() as u8);
        msg.extend_from_slice(label.as_bytes());
    }
    msg.push(0);
    msg.extend_from_slice(&rtype.code().to_be_bytes());
    msg.extend_from_slice(&CLASS_IN.to_be_bytes());
    Some(msg)
}

/// A parse failure inside [`parse_answer`]; the caller adds the server.
type Parse<T> = Result<T, &'static str>;

/// What a response means for the query `id` about `name`: `Ok(None)` when it is truncated
/// (ask again over TCP), `Err(rcode)` for a server-side failure.
pub fn parse_answer(msg: &[u8], id: u16, name: &str, rtype: RecordType) -> Parse<Result<Option<Answer>, u8>> {
    if msg.len() < HEADER_LEN {
        return Err("shorter than a header");
    }
    let field = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
    if field(0) != id {
        return Err("another query's id");
    }
    let flags = field(2);
    if flags & 0x8000 == 0 || (flags >> 11) & 0xf != 0 {
        return Err("not an answer to a standard query");
    }
    if flags & 0x0200 != 0 {
        return Ok(Ok(None));
    }
    match (flags & 0xf) as u8 {
        0 => {}
        3 => return Ok(Ok(Some(Answer::NoSuchName))),
        rcode => return Ok(Err(rcode)),
    }
    let (questions, answers) = (field(4), field(6));
    if questions != 1 {
        return Err("not exactly one question");
    }
    let (qname, mut pos) = read_name(msg, HEADER_LEN)?;
    let qtype = u16::from_be_bytes(*msg.get(pos..pos + 2).and_then(|s| s.first_chunk()).ok_or("cut")?);
    if !qname.eq_ignore_ascii_case(name) || qtype != rtype.code() {
        return Err("answers another question");
    }
    pos += 4;
    let mut records = Vec::new();
    for _ in 0..answers {
        let (owner, next) = read_name(msg, pos)?;
        let fixed = msg.get(next..next + 10).ok_or("record cut")?;
        let rr_type = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rr_class = u16::from_be_bytes([fixed[2], fixed[3]]);
        let len = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        let data_at = next + 10;
        let data = msg.get(data_at..data_at + len).ok_or("record data cut")?;
        pos = data_at + len;
        if rr_class != CLASS_IN {
            continue;
        }
        let value = match (rr_type, data.len()) {
            (TYPE_CNAME, _) => Record::Alias(read_name(msg, data_at)?.0),
            (1, 4) if rtype == RecordType::A => {
                Record::Address(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(data).expect("4 bytes"))))
            }
            (28, 16) if rtype == RecordType::Aaaa => {
                Record::Address(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(data).expect("16 bytes"))))
            }
            _ => continue,
        };
        records.push((owner, value));
    }
    // Addresses of the asked name or of a name it is an alias of, within the answer.
    let mut chain = vec![name.to_ascii_lowercase()];
    for _ in 0..MAX_CHAIN {
        let last = chain.last().expect("not empty");
        let Some(target) = records.iter().find_map(|(owner, r)| match r {
            Record::Alias(t) if owner.eq_ignore_ascii_case(last) => Some(t.to_ascii_lowercase()),
            _ => None,
        }) else {
            break;
        };
        if chain.contains(&target) {
            break;
        }
        chain.push(target);
    }
    let addresses = records
        .iter()
        .filter_map(|(owner, r)| match r {
            Record::Address(ip) if chain.iter().any(|c| owner.eq_ignore_ascii_case(c)) => Some(*ip),
            _ => None,
        })
        .collect();
    Ok(Ok(Some(Answer::Addresses(addresses))))
}

enum Record {
    Alias(String),
    Address(IpAddr),
}

/// Reads a possibly compressed name at `pos`; returns it (dotted, no trailing dot) and the
/// position after it in the message.
fn read_name(msg: &[u8], mut pos: usize) -> Parse<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    let mut pointers = 0;
    loop {
        let len = *msg.get(pos).ok_or("name cut")? as usize;
        match len & 0xc0 {
            0x00 if len == 0 => {
                let next = end.unwrap_or(pos + 1);
                return Ok((labels.join("."), next));
            }
            0x00 => {
                let label = msg.get(pos + 1..pos + 1 + len).ok_or("label cut")?;
                labels.push(String::from_utf8_lossy(label).into_owned());
                pos += 1 + len;
            }
            0xc0 => {
                let low = *msg.get(pos + 1).ok_or("pointer cut")? as usize;
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return Err("compression loop");
                }
                end.get_or_insert(pos + 2);
                pos = ((len & 0x3f) << 8) | low;
            }
            _ => return Err("unknown label type"),
        }
    }
}

/// Asks `server` about `name` over UDP, and over TCP when the answer is truncated.
pub async fn query(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Answer, DnsError> {
    let id = random_id();
    let packet = encode_query(id, name, rtype).expect("the resolver passes only valid names");
    let io = |e: std::io::Error| DnsError::Io { server, detail: e.to_string() };
    let work = async {
        match udp_exchange(server, &packet, id, name, rtype).await? {
            Some(answer) => Ok(answer),
            None => tcp_exchange(server, &packet, id, name, rtype).await,
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r.map_err(|e| match e {
            Exchange::Io(e) => io(e),
            Exchange::Malformed(detail) => DnsError::Malformed { server, detail },
            Exchange::Failure(rcode) => DnsError::ServerFailure { server, rcode },
        }),
        Err(_) => Err(DnsError::Timeout { server, timeout }),
    }
}

enum Exchange {
    Io(std::io::Error),
    Malformed(&'static str),
    Failure(u8),
}

impl From<std::io::Error> for Exchange {
    fn from(e: std::io::Error) -> Self {
        Exchange::Io(e)
    }
}

/// `Ok(None)`: the answer was truncated.
async fn udp_exchange(
    server: SocketAddr,
    packet: &[u8],
    id: u16,
    name: &str,
    rtype: RecordType,
) -> Result<Option<Answer>, Exchange> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(packet).await?;
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        let n = socket.recv(&mut buf).await?;
        match parse_answer(&buf[..n], id, name, rtype) {
            // A stray or forged datagram: keep waiting for the real answer (until the timeout).
            Err(_) => continue,
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(rcode)) => return Err(Exchange::Failure(rcode)),
        }
    }
}

async fn tcp_exchange(
    server: SocketAddr,
    packet: &[u8],
    id: u16,
    name: &str,
    rtype: RecordType,
) -> Result<Answer, Exchange> {
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    match parse_answer(&buf, id, name, rtype) {
        Err(detail) => Err(Exchange::Malformed(detail)),
        Ok(Ok(Some(answer))) => Ok(answer),
        Ok(Ok(None)) => Err(Exchange::Malformed("truncated over TCP")),
        Ok(Err(rcode)) => Err(Exchange::Failure(rcode)),
    }
}

fn random_id() -> u16 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 2];
    ring::rand::SystemRandom::new().fill(&mut b).expect("the OS random source works");
    u16::from_be_bytes(b)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds the answer a recursive server would send to `query`.
    pub(crate) struct Reply {
        pub rcode: u8,
        pub truncated: bool,
        /// (owner, type, data); owner `None` = a pointer to the question's name.
        pub records: Vec<(Option<&'static str>, u16, Vec<u8>)>,
    }

    impl Reply {
        pub(crate) fn to(&self, query: &[u8]) -> Vec<u8> {
            let question_end = query.len();
            let mut msg = query[..2].to_vec();
            let mut flags: u16 = 0x8180 | self.rcode as u16;
            if self.truncated {
                flags |= 0x0200;
            }
            msg.extend_from_slice(&flags.to_be_bytes());
            msg.extend_from_slice(&[0, 1]);
            msg.extend_from_slice(&(self.records.len() as u16).to_be_bytes());
            msg.extend_from_slice(&[0, 0, 0, 0]);
            msg.extend_from_slice(&query[HEADER_LEN..question_end]);
            for (owner, rtype, data) in &self.records {
                match owner {
                    None => msg.extend_from_slice(&[0xc0, HEADER_LEN as u8]),
                    Some(name) => msg.extend_from_slice(&wire_name(name)),
                }
                msg.extend_from_slice(&rtype.to_be_bytes());
                msg.extend_from_slice(&CLASS_IN.to_be_bytes());
                msg.extend_from_slice(&300u32.to_be_bytes());
                msg.extend_from_slice(&(data.len() as u16).to_be_bytes());
                msg.extend_from_slice(data);
            }
            msg
        }
    }

    pub(crate) fn wire_name(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    /// The name and type a query asks about.
    pub(crate) fn question(query: &[u8]) -> (String, u16) {
        let (name, pos) = read_name(query, HEADER_LEN).unwrap();
        (name, u16::from_be_bytes([query[pos], query[pos + 1]]))
    }

    fn a(ip: [u8; 4]) -> Vec<u8> {
        ip.to_vec()
    }

    #[test]
    fn query_encoding() {
        let q = encode_query(0xabcd, "db1.example.com", RecordType::Aaaa).unwrap();
        assert_eq!(&q[..4], &[0xab, 0xcd, 0x01, 0x00]);
        assert_eq!(question(&q), ("db1.example.com".to_owned(), 28));
        assert!(encode_query(1, "a..b", RecordType::A).is_none());
        assert!(encode_query(1, "", RecordType::A).is_none());
        assert!(encode_query(1, &"x".repeat(64), RecordType::A).is_none());
        assert!(encode_query(1, "bücher.example", RecordType::A).is_none());
    }

    #[test]
    fn answers_follow_cnames_and_ignore_other_owners() {
        let q = encode_query(7, "db.example.com", RecordType::A).unwrap();
        let reply = Reply {
            rcode: 0,
            truncated: false,
            records: vec![
                (None, TYPE_CNAME, wire_name("pg.Example.com")),
                (Some("pg.example.com"), 1, a([10, 0, 0, 11])),
                (Some("unrelated.example.com"), 1, a([10, 9, 9, 9])),
                (Some("pg.example.com"), 1, a([10, 0, 0, 12])),
                // An AAAA record in an A answer is ignored.
                (Some("pg.example.com"), 28, vec![0; 16]),
            ],
        }
        .to(&q);
        let want: Vec<IpAddr> = vec!["10.0.0.11".parse().unwrap(), "10.0.0.12".parse().unwrap()];
        let got = parse_answer(&reply, 7, "db.example.com", RecordType::A).unwrap().unwrap();
        assert_eq!(got, Some(Answer::Addresses(want)));
    }

    #[test]
    fn error_codes_truncation_and_foreign_answers() {
        let q = encode_query(9, "x.example", RecordType::A).unwrap();
        let reply = |rcode, truncated| Reply { rcode, truncated, records: vec![] }.to(&q);
        assert_eq!(
            parse_answer(&reply(3, false), 9, "x.example", RecordType::A),
            Ok(Ok(Some(Answer::NoSuchName)))
        );
        assert_eq!(parse_answer(&reply(2, false), 9, "x.example", RecordType::A), Ok(Err(2)));
        assert_eq!(parse_answer(&reply(0, true), 9, "x.example", RecordType::A), Ok(Ok(None)));
        assert_eq!(
            parse_answer(&reply(0, false), 9, "x.example", RecordType::A),
            Ok(Ok(Some(Answer::Addresses(vec![]))))
        );
        assert!(parse_answer(&reply(0, false), 10, "x.example", RecordType::A).is_err());
        assert!(parse_answer(&reply(0, false), 9, "y.example", RecordType::A).is_err());
        assert!(parse_answer(&reply(0, false), 9, "x.example", RecordType::Aaaa).is_err());
        assert!(parse_answer(&q, 9, "x.example", RecordType::A).is_err(), "a query is no answer");
        assert!(parse_answer(&reply(0, false)[..20], 9, "x.example", RecordType::A).is_err());
    }

    #[test]
    fn compression_loops_are_refused() {
        let mut msg = vec![0u8; HEADER_LEN];
        msg.extend_from_slice(&[0xc0, HEADER_LEN as u8]);
        assert_eq!(read_name(&msg, HEADER_LEN), Err("compression loop"));
    }
}
