//! `hsmkit plugins list|info`.

use crate::cli::PluginsCommand;
use crate::output::{print_json, print_table};
use crate::plugin_setup::Context_;
use anyhow::Result;
use provisioning_core::plugin::{settings_lines, LoadedPlugin, PluginMetadata, PluginSearchDir};
use serde::Serialize;
use std::process::ExitCode;

#[derive(Serialize)]
struct PluginRow {
    path: String,
    /// Only for refused files: loaded plugins carry their name in `metadata`.
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Option<String>>,
    status: &'static str,
    reason: Option<String>,
    #[serde(rename = "refusedBecause", skip_serializing_if = "Option::is_none")]
    refused_because: Option<&'static str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    metadata: Option<PluginMetadata>,
    #[serde(rename = "loadMillis", skip_serializing_if = "Option::is_none")]
    load_millis: Option<f64>,
}

#[derive(Serialize)]
struct PluginList<'a> {
    #[serde(rename = "searchPath")]
    search_path: &'a [PluginSearchDir],
    plugins: Vec<PluginRow>,
}

pub(super) fn run(ctx: &Context_, cmd: PluginsCommand) -> Result<ExitCode> {
    match cmd {
        PluginsCommand::List { json } => list(ctx, json),
        PluginsCommand::Info { name, json } => info(ctx, &name, json),
    }
}

fn list(ctx: &Context_, json: bool) -> Result<ExitCode> {
    let scan = ctx.search.scan();
    let rows: Vec<PluginRow> = scan
        .candidates
        .into_iter()
        .map(|c| match c.result {
            Ok(p) => PluginRow {
                path: c.path.display().to_string(),
                name: None,
                // Linked into this hsmkit (`builtin-*` features) rather than loaded from a file.
                status: if p.is_builtin() { "builtin" } else { "loaded" },
                reason: None,
                refused_because: None,
                metadata: Some(p.metadata().clone()),
                load_millis: Some(p.load_time().as_secs_f64() * 1000.0),
            },
            Err(e) => PluginRow {
                path: c.path.display().to_string(),
                name: Some(None),
                status: "refused",
                reason: Some(e.to_string()),
                refused_because: Some(e.kind()),
                metadata: None,
                load_millis: None,
            },
        })
        .collect();
    if json {
        print_json(&PluginList {
            search_path: &ctx.search.dirs,
            plugins: rows,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let searched: Vec<String> = ctx
        .search
        .dirs
        .iter()
        .map(|d| format!("{} ({})", d.path.display(), d.source.describe()))
        .collect();
    println!("searched: {}", searched.join(", "));
    if rows.is_empty() {
        println!("no plugins found; set --plugin-dir or HSMKIT_PLUGIN_DIR");
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| match &r.metadata {
            Some(m) => vec![
                m.name.clone(),
                r.status.into(),
                m.version.clone(),
                m.capabilities.names().join(","),
                m.vendor.clone(),
                r.path.clone(),
            ],
            None => vec![
                "-".into(),
                "refused".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                r.reason.clone().unwrap_or_default(),
            ],
        })
        .collect();
    print_table(
        &[
            "NAME",
            "STATUS",
            "VERSION",
            "INTERFACES",
            "VENDOR",
            "PATH / REASON",
        ],
        &table,
    );
    Ok(ExitCode::SUCCESS)
}

fn info(ctx: &Context_, name: &str, json: bool) -> Result<ExitCode> {
    let plugin: std::sync::Arc<LoadedPlugin> = ctx.search.find(name)?;
    let m = plugin.metadata();
    if json {
        #[derive(Serialize)]
        struct Info<'a> {
            path: String,
            #[serde(flatten)]
            metadata: &'a PluginMetadata,
            #[serde(rename = "loadMillis")]
            load_millis: f64,
        }
        print_json(&Info {
            path: plugin.path().display().to_string(),
            metadata: m,
            load_millis: plugin.load_time().as_secs_f64() * 1000.0,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("name:         {}", m.name);
    println!("version:      {}", m.version);
    println!("vendor:       {}", m.vendor);
    println!("description:  {}", m.description);
    println!("path:         {}", plugin.path().display());
    println!("abi:          {}", m.abi_version);
    println!("interfaces:   {}", m.capabilities.names().join(", "));
    // --json has it as `operationalKey` (the metadata field).
    println!(
        "op. key:      {}",
        if m.operational_key {
            "yes (ABI 1.2 operational-key interface: certificate issuance and renewal)"
        } else {
            "no (no ABI 1.2 operational-key interface: no certificate issuance)"
        }
    );
    println!("thread-safe:  {}", m.thread_safe);
    println!(
        "layout check: {}",
        if m.layout_checked {
            "verified field by field (abi_stable)"
        } else {
            "not available (C plugin or other minor); header sizes checked"
        }
    );
    println!(
        "load time:    {:.3} ms",
        plugin.load_time().as_secs_f64() * 1000.0
    );
    // One line per setting `create` accepts (any other key is refused), or "settings not
    // declared" for an ABI 1.0 plugin.
    println!("settings:");
    for line in settings_lines(m.settings.as_deref()) {
        println!("  {line}");
    }
    Ok(ExitCode::SUCCESS)
}
