//! Encoding of Raft messages on the wire, in one place so a switch from protobuf 2 to prost
//! stays small (STACK.md item 3). Frames are `[u32 big-endian length][payload]`; a peer's first
//! frame is a JSON [`Hello`], every later frame one protobuf `raft::eraftpb::Message`.
//!
//! protobuf 2.28 has a known stack overflow on crafted input (RUSTSEC-2024-0437); only peers
//! that passed mutual TLS with a member certificate of this cluster reach `decode_message`.

use crate::types::{MemberName, NodeId};
use protobuf::Message as _;
use raft::eraftpb::Message;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Large enough for a snapshot of the cluster state (kilobytes in practice), small enough that
/// a broken peer cannot make us allocate without bound.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// The first frame on a Raft connection: who is talking, in which cluster incarnation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub incarnation: String,
    pub node_id: NodeId,
    pub name: MemberName,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME} byte limit")]
    TooLarge(usize),
    #[error("undecodable frame: {0}")]
    Decode(String),
}

pub fn encode_message(m: &Message) -> Vec<u8> {
    m.write_to_bytes().expect("raft messages always encode")
}

pub fn decode_message(b: &[u8]) -> Result<Message, CodecError> {
    Message::parse_from_bytes(b).map_err(|e| CodecError::Decode(e.to_string()))
}

pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> Result<(), CodecError> {
    if payload.len() > MAX_FRAME {
        return Err(CodecError::TooLarge(payload.len()));
    }
    w.write_all(&(payload.len() as u32).to_be_bytes()).await?;
    w.write_all(payload).await?;
    Ok(())
}

pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, CodecError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(CodecError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::MessageType;

    #[tokio::test]
    async fn frames_round_trip_and_oversize_is_refused() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.from = 1;
        m.to = 2;
        m.term = 7;
        let mut buf = Vec::new();
        write_frame(&mut buf, &encode_message(&m)).await.unwrap();
        let mut r = &buf[..];
        let back = decode_message(&read_frame(&mut r).await.unwrap()).unwrap();
        assert_eq!(back, m);
        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        let mut r = &huge[..];
        assert!(matches!(read_frame(&mut r).await, Err(CodecError::TooLarge(_))));
        assert!(decode_message(&[0xff, 0xff, 0xff]).is_err());
    }
}
