//! `[store]`: the kind, and for etcd its endpoints, prefix, node id and credentials.

use super::super::store::{
    default_node, parse_endpoint, valid_node, valid_prefix, EtcdStore, StoreKind,
};
use super::*;

impl Validator {
    /// `[store]`, validated; errors for what does not fit its kind.
    pub(super) fn store(&mut self, store: &Spanned<RawStore>, base_dir: &Path) -> StoreKind {
        let raw = store.get_ref();
        let etcd = match &raw.kind {
            None => false,
            Some(k) if k.get_ref() == "sqlite" => false,
            Some(k) if k.get_ref() == "etcd" => true,
            Some(k) => {
                self.error(
                    "invalid-value",
                    k.span(),
                    format!("`store.kind` {:?} is not a store", k.get_ref()),
                    "use kind = \"sqlite\" (the default: one instance) or kind = \"etcd\" (a fleet)",
                );
                return StoreKind::Sqlite;
            }
        };
        let etcd_only: [(&str, Option<std::ops::Range<usize>>); 8] = [
            ("endpoints", raw.endpoints.as_ref().map(|e| e.span())),
            ("prefix", raw.prefix.as_ref().map(Spanned::span)),
            ("node", raw.node.as_ref().map(Spanned::span)),
            ("user", raw.user.as_ref().map(Spanned::span)),
            (
                "password_file",
                raw.password_file.as_ref().map(Spanned::span),
            ),
            ("ca", raw.ca.as_ref().map(Spanned::span)),
            ("cert", raw.cert.as_ref().map(Spanned::span)),
            ("key", raw.key.as_ref().map(Spanned::span)),
        ];
        if !etcd {
            for (field, span) in etcd_only {
                if let Some(span) = span {
                    self.error(
                        "invalid-value",
                        span,
                        format!("`store.{field}` is for kind = \"etcd\"; the SQLite store keeps its file in state_dir"),
                        "add kind = \"etcd\" to [store], or remove this field",
                    );
                }
            }
            return StoreKind::Sqlite;
        }
        let endpoints = self.required(
            "store.endpoints",
            raw.endpoints.as_ref(),
            store.span(),
            "endpoints = [\"http://127.0.0.1:2379\"]",
        );
        let mut parsed = Vec::new();
        if let Some(endpoints) = endpoints {
            if endpoints.get_ref().is_empty() {
                self.error(
                    "missing-field",
                    endpoints.span(),
                    "`store.endpoints` is empty".into(),
                    "name at least one etcd member: endpoints = [\"http://127.0.0.1:2379\"]",
                );
            }
            for endpoint in endpoints.get_ref() {
                match parse_endpoint(endpoint.get_ref()) {
                    Ok(e) => parsed.push(e),
                    Err(expected) => self.error(
                        "invalid-address",
                        endpoint.span(),
                        format!(
                            "`store.endpoints` entry {:?} is not an etcd endpoint",
                            endpoint.get_ref()
                        ),
                        format!("expected {expected}"),
                    ),
                }
            }
        }
        let prefix = self.required(
            "store.prefix",
            raw.prefix.as_ref(),
            store.span(),
            "prefix = \"/evenkeel/prod\"",
        );
        if let Some(prefix) = prefix.filter(|p| !valid_prefix(p.get_ref())) {
            self.error(
                "invalid-value",
                prefix.span(),
                format!("`store.prefix` {:?} is not a key prefix", prefix.get_ref()),
                "start with / and use letters, digits, - _ . between single slashes, with no trailing / and no segment named as the fleet's own keys (head, current..., versions, rejected, journal, nodes): prefix = \"/evenkeel/prod\"",
            );
        }
        if let Some(node) = raw.node.as_ref().filter(|n| !valid_node(n.get_ref())) {
            self.error(
                "invalid-value",
                node.span(),
                format!("`store.node` {:?} is not a node id", node.get_ref()),
                "use 1 to 64 letters, digits, - _ . or :, such as node = \"lb-1\"",
            );
        }
        match (&raw.user, &raw.password_file) {
            (Some(user), None) => self.error(
                "missing-field",
                user.span(),
                "`store.user` without `store.password_file`".into(),
                "add password_file = \"etcd.password\" (a file holding the user's password)",
            ),
            (None, Some(file)) => self.error(
                "missing-field",
                file.span(),
                "`store.password_file` without `store.user`".into(),
                "add user = \"evenkeel\" (the etcd user the password is for)",
            ),
            _ => {}
        }
        match (&raw.cert, &raw.key) {
            (Some(cert), None) => self.error(
                "missing-field",
                cert.span(),
                "`store.cert` without `store.key`".into(),
                "add key = \"client.key\" (the client certificate's private key)",
            ),
            (None, Some(key)) => self.error(
                "missing-field",
                key.span(),
                "`store.key` without `store.cert`".into(),
                "add cert = \"client.pem\" (the client certificate)",
            ),
            _ => {}
        }
        let tls_files = [raw.ca.as_ref(), raw.cert.as_ref()];
        if parsed.iter().all(|e| !e.tls) && !parsed.is_empty() {
            if let Some(file) = tls_files.into_iter().flatten().next() {
                self.error(
                    "invalid-value",
                    file.span(),
                    "TLS files for etcd, but every endpoint is http://".into(),
                    "use https:// endpoints, or remove ca, cert and key",
                );
            }
        }
        let path = |s: &Option<Str>| s.as_ref().map(|s| base_dir.join(s.get_ref()));
        StoreKind::Etcd(Box::new(EtcdStore {
            endpoints: parsed,
            prefix: prefix.map(|p| p.get_ref().clone()).unwrap_or_default(),
            node: raw
                .node
                .as_ref()
                .map_or_else(default_node, |n| n.get_ref().clone()),
            user: raw.user.as_ref().map(|u| u.get_ref().clone()),
            password_file: path(&raw.password_file),
            ca: path(&raw.ca),
            cert: path(&raw.cert),
            key: path(&raw.key),
            span: store.span(),
        }))
    }
}
