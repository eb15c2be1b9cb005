//! Owns `reckon version`: build identity plus, optionally, the connected cluster's version.

use super::Output;
use crate::{cluster, version};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    /// Ask this cluster for its version (also read from $KUBECONFIG).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long)]
    context: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(serde::Serialize)]
struct Report {
    #[serde(flatten)]
    build: version::BuildInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterReport>,
}

#[derive(serde::Serialize)]
struct ClusterReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    server_version: Option<String>,
    /// Whether the server's release is in `supported_kubernetes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    support: Option<version::Support>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub async fn run(args: VersionArgs) -> anyhow::Result<ExitCode> {
    let cluster = match &args.kubeconfig {
        None => None,
        Some(path) => Some(
            match async {
                let client = cluster::client(Some(path), args.context.as_deref()).await?;
                cluster::server_version(&client).await
            }
            .await
            {
                Ok((v, support)) => ClusterReport {
                    server_version: Some(v),
                    support: Some(support),
                    error: None,
                },
                Err(e) => ClusterReport {
                    server_version: None,
                    support: None,
                    error: Some(e.to_string()),
                },
            },
        ),
    };
    let unreachable = cluster.as_ref().is_some_and(|c| c.error.is_some());
    let report = Report {
        build: version::build_info(),
        cluster,
    };
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Output::Text => {
            writeln!(out, "reckon {}", report.build.version)?;
            writeln!(out, "commit: {}", report.build.git_commit)?;
            writeln!(
                out,
                "tested against Kubernetes: {}",
                report.build.tested_kubernetes.join(", ")
            )?;
            writeln!(
                out,
                "supported Kubernetes: {}",
                report.build.supported_kubernetes
            )?;
            writeln!(
                out,
                "Kubernetes API types: {}",
                report.build.compiled_kubernetes_api
            )?;
            if let Some(c) = &report.cluster {
                match (&c.server_version, &c.error) {
                    (Some(v), _) => match c.support {
                        Some(s) => writeln!(out, "cluster: {v} ({s})")?,
                        None => writeln!(out, "cluster: {v}")?,
                    },
                    (None, Some(e)) => writeln!(out, "cluster: unreachable: {e}")?,
                    _ => {}
                }
            }
        }
    }
    // A cluster that was asked for and did not answer is a failure for scripts.
    Ok(if unreachable {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
