//! Domain newtypes shared by every module: member names, Raft node ids, lease epochs, WAL
//! positions and timelines. They carry no behaviour beyond parsing and display, so that a
//! `u64` can never be passed where a lease epoch was meant.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A member's name (`name` in the config), unique in the cluster; also the Postgres
/// `application_name` and part of the certificate URI SAN, so it is restricted to
/// `[A-Za-z0-9_.-]`, 1..=63 characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MemberName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid member name {0:?}: use 1 to 63 characters from A-Z a-z 0-9 _ . -")]
pub struct InvalidMemberName(pub String);

impl MemberName {
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidMemberName> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if ok {
            Ok(MemberName(s))
        } else {
            Err(InvalidMemberName(s))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MemberName {
    type Error = InvalidMemberName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        MemberName::new(s)
    }
}
impl From<MemberName> for String {
    fn from(m: MemberName) -> String {
        m.0
    }
}
impl FromStr for MemberName {
    type Err = InvalidMemberName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MemberName::new(s)
    }
}
impl fmt::Display for MemberName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Raft node id. Assigned by the cluster (the init node is 1, joiners get the next free one)
/// and never reused, so a removed member's id can never be confused with a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// The primary lease's epoch: increases by one at every accepted acquire, never reused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseEpoch(pub u64);

impl LeaseEpoch {
    pub fn next(self) -> LeaseEpoch {
        LeaseEpoch(self.0 + 1)
    }
}
impl fmt::Display for LeaseEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A WAL position. Displays and parses as Postgres does (`0/3000148`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Lsn(pub u64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid LSN {0:?}: expected the Postgres form like 0/3000148")]
pub struct InvalidLsn(pub String);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}
impl FromStr for Lsn {
    type Err = InvalidLsn;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidLsn(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let hi = u64::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| bad())?;
        if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
            return Err(bad());
        }
        Ok(Lsn((hi << 32) | lo))
    }
}

/// A Postgres timeline id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timeline(pub u32);

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_in_postgres_notation() {
        for (text, value) in [("0/0", 0u64), ("0/3000148", 0x3000148), ("1A/FF", (0x1a << 32) | 0xff)] {
            let lsn: Lsn = text.parse().unwrap();
            assert_eq!(lsn, Lsn(value));
            assert_eq!(lsn.to_string(), text.to_uppercase().replace("0X", ""));
        }
        assert!("3000148".parse::<Lsn>().is_err());
        assert!("0/xyz".parse::<Lsn>().is_err());
        assert!("100000000/0".parse::<Lsn>().is_err());
    }

    #[test]
    fn member_names_are_restricted() {
        assert!(MemberName::new("node-1.a_b").is_ok());
        for bad in ["", "has space", "slash/x", "ünï", &"x".repeat(64)] {
            assert!(MemberName::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
