//! Output of `pgha ctl`: a bordered table like patronictl's, JSON, or YAML.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
}

/// Renders rows as a table with `+---+` borders (patronictl's look).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = format!("+{}+\n", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("+"));
    let row = |cells: Vec<&str>| {
        let mut s = String::from("|");
        for (i, c) in cells.iter().enumerate() {
            s.push_str(&format!(" {c:<w$} |", w = widths[i]));
        }
        s.push('\n');
        s
    };
    let mut out = line.clone();
    out.push_str(&row(headers.to_vec()));
    out.push_str(&line);
    for r in rows {
        out.push_str(&row(r.iter().map(String::as_str).collect()));
    }
    out.push_str(&line);
    out
}

/// Prints data in the chosen format; `to_rows` makes the table form.
pub fn render<T: Serialize>(
    format: Format,
    data: &T,
    headers: &[&str],
    to_rows: impl FnOnce(&T) -> Vec<Vec<String>>,
) -> String {
    match format {
        Format::Table => table(headers, &to_rows(data)),
        Format::Json => serde_json::to_string_pretty(data).expect("ctl output serializes") + "\n",
        Format::Yaml => serde_saphyr::to_string(data).expect("ctl output serializes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns_to_the_widest_cell() {
        let t = table(
            &["Member", "Role"],
            &[vec!["node1".into(), "leader".into()], vec!["n2".into(), "follower".into()]],
        );
        let expected = "\
+--------+----------+
| Member | Role     |
+--------+----------+
| node1  | leader   |
| n2     | follower |
+--------+----------+
";
        assert_eq!(t, expected);
    }
}
