//! `pg_hba.conf`, written by pgha from the dynamic `postgresql.pg_hba` rules. Pure. Input: the
//! three role names pgha uses and the cluster's rules; output: the file's text. pgha's own lines
//! come first, because Postgres uses the first matching line and pgha must always be able to
//! manage its Postgres: its superuser over the local socket, the replication role for
//! `replication` over TLS (clones and streaming), the rewind role for pg_rewind's SQL
//! connection over TLS. Then the cluster's rules, or, when there are none, defaults that ask for
//! scram-sha-256 everywhere and TLS for every connection that leaves the host. It never weakens
//! pgha's lines and never accepts a rule that would spill onto a second line.

use crate::pg::conf::ConfError;

/// The roles pgha's own lines name (`postgresql.authentication.*.username`).
#[derive(Clone, Copy, Debug)]
pub struct HbaRoles<'a> {
    pub superuser: &'a str,
    pub replication: &'a str,
    pub rewind: &'a str,
}

/// Used when `postgresql.pg_hba` is empty.
pub const DEFAULT_RULES: &[&str] = &[
    "local   all          all                   scram-sha-256",
    "host    all          all   127.0.0.1/32    scram-sha-256",
    "host    all          all   ::1/128         scram-sha-256",
    "hostssl all          all   all             scram-sha-256",
];

/// The text of pg_hba.conf.
pub fn render_pg_hba(roles: HbaRoles, rules: &[String]) -> Result<String, ConfError> {
    let su = role(roles.superuser)?;
    let repl = role(roles.replication)?;
    let rewind = role(roles.rewind)?;
    let mut out = String::from(
        "# Written by pgha; do not edit: pgha rewrites this file.\n\
         # Change the rules with `pgha ctl edit-config` (postgresql.pg_hba).\n\n\
         # pgha's own connections: its superuser over pgha's socket, streaming and clones, pg_rewind.\n",
    );
    out.push_str(&format!("local   all          {su:<20} scram-sha-256\n"));
    out.push_str(&format!("local   replication  {su:<20} scram-sha-256\n"));
    out.push_str(&format!("hostssl replication  {repl:<20} all  scram-sha-256\n"));
    out.push_str(&format!("hostssl all          {rewind:<20} all  scram-sha-256\n"));
    if rules.is_empty() {
        out.push_str("\n# Defaults (postgresql.pg_hba is empty): scram-sha-256, TLS off this host.\n");
        for rule in DEFAULT_RULES {
            out.push_str(rule);
            out.push('\n');
        }
    } else {
        out.push_str("\n# postgresql.pg_hba\n");
        for (index, rule) in rules.iter().enumerate() {
            let bad = |problem| ConfError::BadHbaRule { index, rule: rule.clone(), problem };
            if rule.chars().any(|c| c.is_control() && c != '\t') {
                return Err(bad("contains a line break or control character; write one rule per entry"));
            }
            if rule.trim().is_empty() {
                return Err(bad("is empty"));
            }
            out.push_str(rule.trim());
            out.push('\n');
        }
    }
    Ok(out)
}

/// A role name as a quoted pg_hba token, so names such as `all`, `replication` or `+group`
/// mean the role itself. pg_hba.conf has no escape for `"` inside a quoted token.
fn role(name: &str) -> Result<String, ConfError> {
    if name.is_empty() || name.contains('"') || name.chars().any(char::is_control) {
        return Err(ConfError::BadRoleName { name: name.to_owned() });
    }
    Ok(format!("\"{name}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLES: HbaRoles =
        HbaRoles { superuser: "postgres", replication: "replicator", rewind: "rewind_user" };

    fn lines(text: &str) -> Vec<Vec<&str>> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split_whitespace().collect())
            .collect()
    }

    #[test]
    fn pgha_lines_come_first_then_defaults() {
        let text = render_pg_hba(ROLES, &[]).unwrap();
        let want: Vec<Vec<&str>> = vec![
            vec!["local", "all", "\"postgres\"", "scram-sha-256"],
            vec!["local", "replication", "\"postgres\"", "scram-sha-256"],
            vec!["hostssl", "replication", "\"replicator\"", "all", "scram-sha-256"],
            vec!["hostssl", "all", "\"rewind_user\"", "all", "scram-sha-256"],
            vec!["local", "all", "all", "scram-sha-256"],
            vec!["host", "all", "all", "127.0.0.1/32", "scram-sha-256"],
            vec!["host", "all", "all", "::1/128", "scram-sha-256"],
            vec!["hostssl", "all", "all", "all", "scram-sha-256"],
        ];
        assert_eq!(lines(&text), want, "{text}");
    }

    #[test]
    fn cluster_rules_replace_the_defaults() {
        let rules = vec!["host all app 10.0.0.0/8 scram-sha-256".to_owned(), "  local all all peer ".into()];
        let text = render_pg_hba(ROLES, &rules).unwrap();
        let got = lines(&text);
        assert_eq!(got.len(), 6, "{text}");
        assert_eq!(got[4], vec!["host", "all", "app", "10.0.0.0/8", "scram-sha-256"]);
        assert_eq!(got[5], vec!["local", "all", "all", "peer"]);
    }

    #[test]
    fn rules_that_break_lines_are_refused() {
        for (rule, index) in [("host all all 0.0.0.0/0 trust\nlocal all all trust", 1), ("   ", 1)] {
            let rules = vec!["local all all scram-sha-256".to_owned(), rule.to_owned()];
            match render_pg_hba(ROLES, &rules) {
                Err(ConfError::BadHbaRule { index: i, .. }) => assert_eq!(i, index),
                other => panic!("{rule:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn role_names_are_quoted_or_refused() {
        let roles = HbaRoles { superuser: "all", ..ROLES };
        assert!(render_pg_hba(roles, &[]).unwrap().contains("local   all          \"all\""));
        for bad in ["a\"b", "a\nb", ""] {
            let roles = HbaRoles { rewind: bad, ..ROLES };
            assert!(matches!(render_pg_hba(roles, &[]), Err(ConfError::BadRoleName { .. })), "{bad:?}");
        }
    }
}
