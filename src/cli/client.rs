//! Talking to a running evenkeel's admin API, for `apply`, `rollback`, `history`,
//! `status` and `report`.
//!
//! The admin address and token come from `-c FILE` (its `[admin]` section: `listen`,
//! and `token_file` relative to the file) or from `--admin ADDR --token-file FILE`.
//! An unreachable API or a refused token is a runtime failure (exit 3).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::{Exit, Failure};
use crate::admin;

/// How to reach the admin API.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Address of the admin API (instead of the config's `[admin] listen`).
    #[arg(long, value_name = "ADDR", requires = "token_file")]
    admin: Option<SocketAddr>,
    /// File holding the admin token (instead of the config's `[admin] token_file`).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// A reachable admin API.
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    token: String,
}

/// What the API answered.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body, parsed as JSON when it is JSON.
    pub json: serde_json::Value,
}

impl Admin {
    /// The admin API named by `args`, or by the `[admin]` section of `config`.
    pub fn find(config: Option<&Path>, args: &AdminArgs) -> Result<Admin, Failure> {
        let usage = |message: String| Failure::new(Exit::Usage, anyhow::anyhow!(message));
        let (addr, token_file) = match (args.admin, &args.token_file, config) {
            (Some(addr), Some(token_file), _) => (addr, token_file.clone()),
            (None, token_file, Some(path)) => {
                let (addr, from_config) = admin_section(path).map_err(usage)?;
                (addr, token_file.clone().unwrap_or(from_config))
            }
            _ => return Err(usage("say where the admin API is: -c FILE (with an [admin] section) or --admin ADDR --token-file FILE".into())),
        };
        let token = admin::read_token(&token_file).map_err(|e| Failure::new(Exit::Usage, e))?;
        Ok(Admin { addr, token })
    }

    /// The admin API at `addr`, with the token in `token_file`, or else in the
    /// `[admin] token_file` of `config`.
    pub fn at(
        addr: SocketAddr,
        token_file: Option<&Path>,
        config: &Path,
    ) -> Result<Admin, Failure> {
        let usage = |message: String| Failure::new(Exit::Usage, anyhow::anyhow!(message));
        let token_file = match token_file {
            Some(file) => file.to_path_buf(),
            None => admin_section(config).map_err(usage)?.1,
        };
        let token = admin::read_token(&token_file).map_err(|e| Failure::new(Exit::Usage, e))?;
        Ok(Admin { addr, token })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `method path` with an optional body; waits at most 60 s.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Answer, Failure> {
        let runtime_error = |message: String| Failure::new(Exit::Runtime, anyhow::anyhow!(message));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| runtime_error(e.to_string()))?;
        let addr = self.addr;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string())
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| runtime_error(e.to_string()))?;
        let exchange = async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(std::io::Error::other)?;
            tokio::spawn(connection);
            let response = sender
                .send_request(request)
                .await
                .map_err(std::io::Error::other)?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(std::io::Error::other)?
                .to_bytes();
            Ok::<_, std::io::Error>((status, body))
        };
        let (status, body) = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(60), exchange).await })
            .map_err(|_| {
                runtime_error(format!(
                    "the admin API at {addr} did not answer within 60 s"
                ))
            })?
            .map_err(|e| runtime_error(format!("cannot reach the admin API at {addr}: {e}")))?;
        if status == 401 {
            return Err(runtime_error(format!(
                "the admin API at {addr} refused the token (401)"
            )));
        }
        let json = serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
        });
        Ok(Answer { status, json })
    }
}

/// `[admin] listen` and `token_file` of a config file, read leniently: the file may
/// have errors elsewhere (it may be the very config being refused).
fn admin_section(path: &Path) -> Result<(SocketAddr, PathBuf), String> {
    let text = crate::config::files::read_config(path).map_err(|e| e.to_string())?;
    let value: toml::Table = toml::from_str(&text)
        .map_err(|e| format!("{} is not valid TOML: {}", path.display(), e.message()))?;
    let admin = value
        .get("admin")
        .and_then(|a| a.as_table())
        .ok_or_else(|| {
            format!(
                "{} has no [admin] section: give --admin ADDR --token-file FILE",
                path.display()
            )
        })?;
    let listen = admin
        .get("listen")
        .and_then(|l| l.as_str())
        .unwrap_or(crate::config::DEFAULT_ADMIN_LISTEN);
    let addr: SocketAddr = crate::config::values::parse_address(listen, false)
        .map_err(|e| format!("[admin] listen in {}: expected {e}", path.display()))?;
    let token_file = admin
        .get("token_file")
        .and_then(|t| t.as_str())
        .ok_or_else(|| format!("[admin] in {} has no token_file", path.display()))?;
    Ok((addr, crate::config::folder_of(path).join(token_file)))
}

/// Prints findings from an answer's JSON (`findings` or `warnings`), one block each.
pub fn print_findings(findings: &serde_json::Value, file: &Path) {
    for f in findings.as_array().into_iter().flatten() {
        let at = match (f["line"].as_u64(), f["column"].as_u64()) {
            (Some(line), Some(column)) => format!("{}:{line}:{column}", file.display()),
            _ => file.display().to_string(),
        };
        outln!(
            "{}[{}]: {}\n  --> {at}",
            f["severity"].as_str().unwrap_or("error"),
            f["rule"].as_str().unwrap_or("?"),
            f["message"].as_str().unwrap_or("")
        );
        if let Some(help) = f["help"].as_str() {
            outln!("   = help: {help}");
        }
    }
}
