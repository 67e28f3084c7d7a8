//! kubectl-like commands against the registry API: `apply`, `get`,
//! `delete`.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::api::{normalized, resource_of};
use crate::definitions;

const V1: &str = "/apis/features.kubeflow.org/v1";

/// Applies in dependency order, so that references resolve.
/// A registry to talk to: its URL and an HTTP client that sends the
/// caller's bearer token, when there is one.
pub struct Remote {
    pub url: String,
    pub http: reqwest::Client,
}

impl Remote {
    pub fn new(url: &str, token: Option<&str>) -> Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the bearer token is not a valid header value")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(Remote {
            url: url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()?,
        })
    }
}

/// The token a client sends: `$LARDER_TOKEN`, else the file named by
/// `token_file` (`registry.token_file`) or `$LARDER_TOKEN_FILE`, read
/// fresh each time because projected tokens rotate.
pub fn client_token(token_file: Option<&Path>) -> Result<Option<String>> {
    if let Ok(token) = std::env::var("LARDER_TOKEN")
        && !token.trim().is_empty()
    {
        return Ok(Some(token.trim().to_owned()));
    }
    let from_env = std::env::var_os("LARDER_TOKEN_FILE").map(std::path::PathBuf::from);
    match token_file.map(Path::to_path_buf).or(from_env) {
        Some(path) => {
            let token = std::fs::read_to_string(&path)
                .with_context(|| format!("reading the token file {}", path.display()))?;
            Ok(Some(token.trim().to_owned()))
        }
        None => Ok(None),
    }
}

fn rank(kind: &str) -> usize {
    match kind {
        "Entity" => 0,
        "DataSource" => 1,
        "FeatureView" => 2,
        "OnDemandFeatureView" => 3,
        _ => 4,
    }
}

fn message_of(body: &serde_json::Value) -> String {
    body["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string())
}

/// Reads every manifest under `path` as JSON, after checking each one
/// locally (the registry checks references).
fn read_manifests(path: &Path) -> Result<Vec<serde_json::Value>> {
    definitions::load_path(path)?;
    let mut files = Vec::new();
    if path.is_dir() {
        let mut stack = vec![path.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let p = entry?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                    files.push(p);
                }
            }
        }
        files.sort();
    } else {
        files.push(path.to_owned());
    }
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc)?;
            if !value.is_null() {
                out.push(serde_json::to_value(value)?);
            }
        }
    }
    // Push and Kafka sources name a batch source: they go after it.
    out.sort_by_key(|m| {
        (
            rank(m["kind"].as_str().unwrap_or_default()),
            matches!(m["spec"]["type"].as_str(), Some("push" | "kafka")),
        )
    });
    Ok(out)
}

/// `larder apply -f PATH`: prints and applies the plan. With `prune`,
/// objects of the namespaces the files touch that the files no longer hold
/// are deleted (referrers first).
pub async fn apply(remote: &Remote, path: &Path, dry_run: bool, prune: bool) -> Result<()> {
    let (registry, http) = (remote.url.as_str(), &remote.http);
    let manifests = read_manifests(path)?;
    let wanted: BTreeSet<(String, String, String)> = manifests
        .iter()
        .map(|m| {
            (
                m["kind"].as_str().unwrap_or_default().to_owned(),
                m["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                m["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    for manifest in manifests {
        let kind = manifest["kind"].as_str().unwrap_or_default().to_owned();
        let namespace = manifest["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = manifest["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let resource = resource_of(&kind).with_context(|| format!("unknown kind {kind:?}"))?;
        let url = format!("{registry}{V1}/namespaces/{namespace}/{resource}/{name}");
        let current = http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("reaching the registry at {registry}"))?;
        let wanted = normalized(manifest.clone());
        let action = match current.status().as_u16() {
            404 => "created",
            200 => {
                let stored = normalized(current.json().await?);
                if stored == wanted {
                    "unchanged"
                } else {
                    "configured"
                }
            }
            other => {
                let body: serde_json::Value = current.json().await.unwrap_or_default();
                bail!(
                    "registry answered {other} for {kind} {namespace}/{name}: {}",
                    message_of(&body)
                )
            }
        };
        if !dry_run && action != "unchanged" {
            let resp = http.put(&url).json(&wanted).send().await?;
            if !resp.status().is_success() {
                let status = resp.status();
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                bail!("{kind} {namespace}/{name}: {status}: {}", message_of(&body));
            }
        }
        let suffix = if dry_run { " (dry run)" } else { "" };
        println!(
            "{} {namespace}/{name} {action}{suffix}",
            kind.to_lowercase()
        );
    }
    if prune {
        prune_absent(http, registry, &wanted, dry_run).await?;
    }
    Ok(())
}

/// Deletes what the applied files no longer hold, in the namespaces they
/// touch: referrers before what they refer to.
async fn prune_absent(
    http: &reqwest::Client,
    registry: &str,
    wanted: &BTreeSet<(String, String, String)>,
    dry_run: bool,
) -> Result<()> {
    let namespaces: BTreeSet<&String> = wanted.iter().map(|(_, ns, _)| ns).collect();
    let kinds = [
        "FeatureService",
        "OnDemandFeatureView",
        "FeatureView",
        "DataSource",
        "Entity",
    ];
    for namespace in namespaces {
        for kind in kinds {
            let resource = resource_of(kind).expect("known kinds");
            let list: serde_json::Value = http
                .get(format!("{registry}{V1}/namespaces/{namespace}/{resource}"))
                .send()
                .await?
                .json()
                .await?;
            for item in list["items"].as_array().into_iter().flatten() {
                let name = item["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if wanted.contains(&(kind.to_owned(), namespace.clone(), name.clone())) {
                    continue;
                }
                if !dry_run {
                    let resp = http
                        .delete(format!(
                            "{registry}{V1}/namespaces/{namespace}/{resource}/{name}"
                        ))
                        .send()
                        .await?;
                    if !resp.status().is_success() {
                        let status = resp.status();
                        let body: serde_json::Value = resp.json().await.unwrap_or_default();
                        bail!(
                            "pruning {kind} {namespace}/{name}: {status}: {}",
                            message_of(&body)
                        );
                    }
                }
                let suffix = if dry_run { " (dry run)" } else { "" };
                println!("{} {namespace}/{name} deleted{suffix}", kind.to_lowercase());
            }
        }
    }
    Ok(())
}

/// `larder get RESOURCE [-n NS]`.
pub async fn get(
    remote: &Remote,
    resource: &str,
    namespace: Option<&str>,
    output: &str,
) -> Result<()> {
    let (registry, http) = (remote.url.as_str(), &remote.http);
    let url = match namespace {
        Some(ns) => format!("{registry}{V1}/namespaces/{ns}/{resource}"),
        None => format!("{registry}{V1}/{resource}"),
    };
    let resp = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("reaching the registry at {registry}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await?;
    if !status.is_success() {
        bail!("{status}: {}", message_of(&body));
    }
    let items = body["items"].as_array().cloned().unwrap_or_default();
    match output {
        "json" => println!("{}", serde_json::to_string_pretty(&items)?),
        "yaml" => {
            for item in &items {
                print!("---\n{}", serde_yaml::to_string(item)?);
            }
        }
        "table" | "wide" => {
            let wide = output == "wide";
            print!(
                "{:<24} {:<40} {:>16}",
                "NAMESPACE", "NAME", "RESOURCEVERSION"
            );
            if wide {
                print!("  {:<36}  DETAILS", "UID");
            }
            println!();
            for item in &items {
                let m = &item["metadata"];
                print!(
                    "{:<24} {:<40} {:>16}",
                    m["namespace"].as_str().unwrap_or_default(),
                    m["name"].as_str().unwrap_or_default(),
                    m["resourceVersion"].as_str().unwrap_or_default()
                );
                if wide {
                    print!(
                        "  {:<36}  {}",
                        m["uid"].as_str().unwrap_or_default(),
                        details(item)
                    );
                }
                println!();
            }
        }
        other => bail!("unknown output {other:?} (use table, wide, json or yaml)"),
    }
    Ok(())
}

/// A one-line summary of an object's spec for `-o wide`.
fn details(item: &serde_json::Value) -> String {
    let spec = &item["spec"];
    let names = |v: &serde_json::Value, key: &str| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x[key].as_str().or(x.as_str()).map(str::to_owned))
            .collect()
    };
    match item["kind"].as_str() {
        Some("FeatureView") => format!(
            "entities={} features={} ttl={}",
            names(&spec["entities"], "").join(","),
            spec["features"].as_array().map_or(0, Vec::len),
            spec["ttl"].as_str().unwrap_or("none")
        ),
        Some("Entity") => format!("joinKeys={}", names(&spec["joinKeys"], "name").join(",")),
        Some("FeatureService") => format!("features={}", names(&spec["features"], "").join(",")),
        _ => String::new(),
    }
}

/// `larder delete RESOURCE NAME -n NS`.
pub async fn delete(remote: &Remote, resource: &str, namespace: &str, name: &str) -> Result<()> {
    let (registry, http) = (remote.url.as_str(), &remote.http);
    let url = format!("{registry}{V1}/namespaces/{namespace}/{resource}/{name}");
    let resp = http
        .delete(&url)
        .send()
        .await
        .with_context(|| format!("reaching the registry at {registry}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{status}: {}", message_of(&body));
    }
    println!("{resource} {namespace}/{name} deleted");
    Ok(())
}

/// `larder describe RESOURCE NAME -n NS`: an object, readably.
pub async fn describe(remote: &Remote, resource: &str, namespace: &str, name: &str) -> Result<()> {
    let (registry, http) = (remote.url.as_str(), &remote.http);
    let url = format!("{registry}{V1}/namespaces/{namespace}/{resource}/{name}");
    let resp = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("reaching the registry at {registry}"))?;
    let status = resp.status();
    let o: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{status}: {}", message_of(&o));
    }
    let m = &o["metadata"];
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    println!("Name:             {}", text(&m["name"]));
    println!("Namespace:        {}", text(&m["namespace"]));
    println!("Kind:             {}", text(&o["kind"]));
    println!("ResourceVersion:  {}", text(&m["resourceVersion"]));
    println!("UID:              {}", text(&m["uid"]));
    println!("Created:          {}", text(&m["creationTimestamp"]));
    println!("Updated:          {}", text(&m["updateTimestamp"]));
    if let Some(labels) = m["labels"].as_object() {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        println!("Labels:           {}", labels.join(", "));
    }
    let spec = &o["spec"];
    if let Some(description) = spec["description"].as_str() {
        println!("Description:      {description}");
    }
    let list = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    match o["kind"].as_str() {
        Some("FeatureView") => {
            println!("Entities:         {}", list(&spec["entities"]).join(", "));
            println!("Source:           {}", text(&spec["source"]));
            println!(
                "TTL:              {}",
                spec["ttl"].as_str().unwrap_or("none")
            );
            println!(
                "Online:           {}",
                spec["online"].as_bool().unwrap_or(true)
            );
            println!("Features:");
            for f in spec["features"].as_array().into_iter().flatten() {
                println!("  {:<32} {}", text(&f["name"]), text(&f["valueType"]));
            }
        }
        Some("Entity") => {
            println!("Join keys:");
            for k in spec["joinKeys"].as_array().into_iter().flatten() {
                println!("  {:<32} {}", text(&k["name"]), text(&k["valueType"]));
            }
        }
        Some("FeatureService") => {
            println!("Features:");
            for f in list(&spec["features"]) {
                println!("  {f}");
            }
        }
        _ => println!("Spec:\n{}", serde_yaml::to_string(spec)?),
    }
    Ok(())
}
