//! `pgha ctl show-config | edit-config | history`: the dynamic configuration and the timeline
//! history through the REST API, as patronictl shows them (YAML for the configuration).

use super::ctl::confirm;
use crate::api::client::ApiClient;
use crate::api::patroni::merge_patch;
use crate::ctl::edit::{diff_patch, line_diff, patch_from};
use crate::ctl::output::{self, Format};
use crate::types::Lsn;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::Read;

#[derive(clap::Args, Debug)]
pub struct EditConfigArgs {
    /// Set a key (dotted path), e.g. --set ttl=20 --set postgresql.use_slots=false; `null`
    /// restores the default
    #[arg(long = "set", short = 's', value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Set a Postgres parameter, e.g. --pg max_connections=200
    #[arg(long = "pg", short = 'p', value_name = "NAME=VALUE")]
    pub pg: Vec<String>,
    /// Apply changes from a YAML or JSON file (merge patch; `-` reads stdin)
    #[arg(long, value_name = "FILE")]
    pub apply: Option<String>,
    /// Do not ask for confirmation
    #[arg(long)]
    pub force: bool,
}

fn yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|_| serde_json::to_string_pretty(v).unwrap_or_default())
}

fn parse_yaml(text: &str, what: &str) -> Result<Value> {
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options(text, options)
        .with_context(|| format!("{what} is not valid YAML or JSON"))
}

pub async fn show_config(api: &ApiClient, format: Format) -> Result<()> {
    let (_, config): (_, Value) = api.get("/config").await?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&config)?),
        Format::Table | Format::Yaml => print!("{}", yaml(&config)),
    }
    Ok(())
}

fn edit_in_editor(current: &Value) -> Result<Value> {
    let editor = std::env::var("EDITOR").or_else(|_| std::env::var("VISUAL")).unwrap_or_else(|_| "vi".into());
    let path = std::env::temp_dir().join(format!("pgha-edit-config-{}.yaml", std::process::id()));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        f.write_all(yaml(current).as_bytes())?;
    }
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status();
    let text = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    let status = status.with_context(|| format!("cannot run the editor {editor:?} (set $EDITOR)"))?;
    if !status.success() {
        bail!("the editor {editor:?} exited with {status}; nothing changed");
    }
    parse_yaml(&text?, "the edited configuration")
}

pub async fn edit_config(api: &ApiClient, args: EditConfigArgs) -> Result<()> {
    let (endpoint, current): (_, Value) = api.get("/config").await?;
    let patch = if args.set.is_empty() && args.pg.is_empty() && args.apply.is_none() {
        diff_patch(&current, &edit_in_editor(&current)?)
    } else {
        let mut patch = Value::Object(Default::default());
        if let Some(file) = &args.apply {
            let text = if file == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            } else {
                std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
            };
            merge_patch(&mut patch, parse_yaml(&text, file)?);
        }
        merge_patch(&mut patch, patch_from(&args.set, &args.pg)?);
        patch
    };
    let mut proposed = current.clone();
    merge_patch(&mut proposed, patch.clone());
    if proposed == current {
        eprintln!("no changes");
        return Ok(());
    }
    print!("{}", line_diff(&yaml(&current), &yaml(&proposed)));
    if !args.force {
        confirm("Apply these changes?")?;
    }
    let (_, _applied): (_, Value) = api.call(hyper::Method::PATCH, "/config", Some(&patch)).await?;
    eprintln!("configuration changed (via {endpoint})");
    Ok(())
}

pub async fn history(api: &ApiClient, format: Format) -> Result<()> {
    let (_, rows): (_, Vec<Value>) = api.get("/history").await?;
    print!(
        "{}",
        output::render(format, &rows, &["TL", "LSN", "Reason", "Timestamp", "New Leader"], |rows| {
            rows.iter()
                .map(|r| {
                    let cell = |i: usize| match &r[i] {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        v => v.to_string(),
                    };
                    let lsn = r[1].as_u64().map(|l| Lsn(l).to_string()).unwrap_or_default();
                    vec![cell(0), lsn, cell(2), cell(3), cell(4)]
                })
                .collect()
        })
    );
    Ok(())
}
