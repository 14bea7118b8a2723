//! Composing broker configuration YAML.
//!
//! Blocks (issuer entries, rules) are written at column 0 and spliced under
//! their top-level key; a block sequence may sit at its parent key's indentation.
//! `@PORT@` and `@DIR@` are placeholders that [`crate::Broker`] fills with the
//! broker's port and tempdir.

/// `text` with `@PORT@` and `@DIR@` replaced by `port` and `dir`.
pub fn fill_placeholders(text: &str, port: u16, dir: &str) -> String {
    text.replace("@PORT@", &port.to_string()).replace("@DIR@", dir)
}

/// Strip a leading newline and the indentation common to all non-blank lines,
/// so YAML can be written indented inside Rust raw strings.
pub fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line.get(indent..).unwrap_or("").trim_end());
        out.push('\n');
    }
    out
}

/// A broker config: listen on `127.0.0.1:@PORT@`, `public_url`
/// `http://127.0.0.1:@PORT@` (plus an optional path), keys in `@DIR@/keys`,
/// audit to `@DIR@/audit.jsonl`, inline issuers and rules.
#[derive(Clone, Debug, Default)]
pub struct BrokerConfig {
    public_path: String,
    server: Vec<String>,
    signing_algorithm: Option<String>,
    issuers: String,
    rules: String,
    top_level: String,
    audit_to_stderr: bool,
}

impl BrokerConfig {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append one issuer entry (`- name: ...`), e.g. from `FakeIssuer::issuer_yaml`.
    pub fn issuer(mut self, block: impl AsRef<str>) -> Self {
        self.issuers.push_str(&dedent(block.as_ref()));
        self
    }

    /// Append rules (a YAML list at column 0).
    pub fn rules(mut self, block: impl AsRef<str>) -> Self {
        self.rules.push_str(&dedent(block.as_ref()));
        self
    }

    /// Add a `server:` key, e.g. `"max_body_bytes: 1024"`.
    pub fn server(mut self, line: &str) -> Self {
        self.server.push(line.to_owned());
        self
    }

    /// Serve under a path: `public_url` becomes `http://127.0.0.1:@PORT@{path}`.
    pub fn public_path(mut self, path: &str) -> Self {
        self.public_path = path.to_owned();
        self
    }

    pub fn signing_algorithm(mut self, alg: &str) -> Self {
        self.signing_algorithm = Some(alg.to_owned());
        self
    }

    /// Extra top-level YAML (e.g. `rules_files: [...]`).
    pub fn top_level(mut self, block: impl AsRef<str>) -> Self {
        self.top_level.push_str(&dedent(block.as_ref()));
        self
    }

    /// Leave `audit.path` out: audit lines go to stderr with the logs.
    pub fn audit_to_stderr(mut self) -> Self {
        self.audit_to_stderr = true;
        self
    }

    /// Render into `dir/fedbroker.yaml` for the CLI (`check`, `explain`, ...):
    /// `@DIR@` is `dir`, `@PORT@` is 18080 (nothing listens there). Returns the path.
    pub fn write_to(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let text = fill_placeholders(&self.render(), 18080, dir.to_str().expect("UTF-8 path"));
        let path = dir.join("fedbroker.yaml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn render(&self) -> String {
        let mut out = String::from("version: 1\nserver:\n  listen: 127.0.0.1:@PORT@\n");
        out.push_str(&format!(
            "  public_url: http://127.0.0.1:@PORT@{}\n",
            self.public_path
        ));
        for line in &self.server {
            out.push_str(&format!("  {line}\n"));
        }
        out.push_str("signing:\n  key_dir: @DIR@/keys\n");
        if let Some(alg) = &self.signing_algorithm {
            out.push_str(&format!("  algorithm: {alg}\n"));
        }
        if !self.audit_to_stderr {
            out.push_str("audit:\n  path: @DIR@/audit.jsonl\n");
        }
        if self.issuers.is_empty() {
            out.push_str("issuers: []\n");
        } else {
            out.push_str("issuers:\n");
            out.push_str(&self.issuers);
        }
        if self.rules.is_empty() {
            out.push_str("rules: []\n");
        } else {
            out.push_str("rules:\n");
            out.push_str(&self.rules);
        }
        out.push_str(&self.top_level);
        out
    }
}
