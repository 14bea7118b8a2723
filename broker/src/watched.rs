//! Which files a configuration was read from: the config file, rule-file globs,
//! `jwks_file`s and `admin.tokens_file`. The reload watcher ([`crate::reload`]) watches
//! them; the policy in force keeps the list of the configuration it installed last.

use std::path::{Path, PathBuf};

use crate::config::{Config, KeySource};

/// What to watch: directories, and which paths in them matter.
#[derive(Debug, Default, Clone)]
pub struct Watched {
    /// Directories, each with whether to watch it recursively (a `**` glob below it).
    pub dirs: Vec<(PathBuf, bool)>,
    files: Vec<PathBuf>,
    patterns: Vec<glob::Pattern>,
}

impl Watched {
    pub fn from_config(config_path: Option<&Path>, config: &Config) -> Watched {
        let Some(config_path) = config_path else {
            return Watched::default();
        };
        let config_path = absolute(config_path);
        let base = config_path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut w = Watched::default();
        w.add_file(config_path.clone());
        for pattern in &config.rules_files {
            // `./rules/*.yaml` and `../shared/**/*.yaml` are matched against event paths,
            // which never hold `.` or `..`: normalise the pattern the same way.
            let full = normalize_lexically(&base.join(pattern));
            if let Ok(p) = glob::Pattern::new(&full.to_string_lossy()) {
                w.patterns.push(p);
            }
            // The deepest directory without glob characters; recursive when the glob
            // reaches below it (`**`, or a wildcard in a directory name).
            let mut dir = PathBuf::new();
            for part in full.parent().into_iter().flat_map(Path::components) {
                if part.as_os_str().to_string_lossy().contains(['*', '?', '[']) {
                    break;
                }
                dir.push(part);
            }
            let recursive = pattern.contains("**") || full.parent() != Some(dir.as_path());
            w.add_dir(dir, recursive);
        }
        for issuer in &config.issuers {
            if let KeySource::File(path, _) = &issuer.keys {
                w.add_file(absolute(path));
            }
        }
        // A token removed from the file is revoked by the reload this triggers.
        if let Some(tokens_file) = config.admin.as_ref().and_then(|a| a.tokens_file.as_ref()) {
            w.add_file(absolute(tokens_file));
        }
        w
    }

    /// Watch one more file.
    pub fn add_file(&mut self, path: PathBuf) {
        let path = normalize_lexically(&absolute(&path));
        if let Some(dir) = path.parent() {
            self.add_dir(dir.to_path_buf(), false);
        }
        self.files.push(path);
    }

    fn add_dir(&mut self, dir: PathBuf, recursive: bool) {
        match self.dirs.iter_mut().find(|(d, _)| *d == dir) {
            Some(entry) => entry.1 |= recursive,
            None => self.dirs.push((dir, recursive)),
        }
    }

    /// Whether a directory created at `dir` may hold files that matter: it is a watched
    /// directory, lies under a recursively watched one, or is the parent of one. Files
    /// written into it before its watch was added send no event of their own (the
    /// `mkdir -p rules/a/b && cp x.yaml rules/a/b/` race), so its creation reloads.
    pub fn covers_dir(&self, dir: &Path) -> bool {
        let dir = normalize_lexically(dir);
        self.dirs
            .iter()
            .any(|(d, recursive)| *d == dir || (*recursive && dir.starts_with(d)) || d.starts_with(&dir))
    }

    /// Whether a change at `path` should trigger a reload. Test files (`*.test.yaml`)
    /// never do: rule-file globs do not load them.
    pub fn matters(&self, path: &Path) -> bool {
        let path = normalize_lexically(path);
        self.files.contains(&path)
            || (!crate::config::is_test_file(&path) && self.patterns.iter().any(|p| p.matches_path(&path)))
    }
}

/// `p` made absolute (against the working directory) and normalised lexically.
fn absolute(p: &Path) -> PathBuf {
    normalize_lexically(&std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
}

/// `p` without `.` components, each `..` resolved against the component before it, by
/// the text alone (symbolic links are not followed): `/etc/fb/./rules/../x/*.yaml` is
/// `/etc/fb/x/*.yaml`. A leading `..` of a relative path stays; `/..` is `/`. Rule-file
/// globs are loaded and watched through this one function, so what is loaded is what is
/// watched.
pub fn normalize_lexically(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in p.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_config_rule_globs_and_not_the_audit_log() {
        let (dir, cfg) = crate::files::temp_file(
            "config.yaml",
            "version: 1\nrules_files: [rules/*.yaml]\naudit:\n  path: audit.jsonl\n",
        );
        std::fs::create_dir_all(dir.path().join("rules")).expect("mkdir");
        let config = crate::config::load(&cfg).expect("valid");
        let w = Watched::from_config(Some(&cfg), &config);
        let root = std::path::absolute(dir.path()).expect("abs");
        assert!(w.matters(&root.join("config.yaml")));
        assert!(w.matters(&root.join("rules/a.yaml")));
        assert!(!w.matters(&root.join("audit.jsonl")));
        assert!(!w.matters(&root.join("rules/a.yaml.swp")));
        // Tests beside the rules are never loaded as rules: no reload for them.
        assert!(!w.matters(&root.join("rules/a.test.yaml")));
        assert!(w.dirs.contains(&(root.join("rules"), false)));
    }

    #[test]
    fn normalises_dot_and_dot_dot_lexically() {
        let n = |p: &str| normalize_lexically(Path::new(p));
        assert_eq!(n("/etc/fb/./rules/*.yaml"), PathBuf::from("/etc/fb/rules/*.yaml"));
        assert_eq!(
            n("/etc/fb/../shared/**/*.yaml"),
            PathBuf::from("/etc/shared/**/*.yaml")
        );
        assert_eq!(n("/etc/fb/rules/./../x.yaml"), PathBuf::from("/etc/fb/x.yaml"));
        assert_eq!(n("/../x"), PathBuf::from("/x"));
        assert_eq!(n("./rules/a.yaml"), PathBuf::from("rules/a.yaml"));
        assert_eq!(n("../a/./b"), PathBuf::from("../a/b"));
        assert_eq!(n("a/../../b"), PathBuf::from("../b"));
    }

    /// The README's own patterns: `./rules/*.yaml`, `../` and `**`.
    #[test]
    fn matches_patterns_written_with_dot_and_dot_dot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::path::absolute(dir.path()).expect("abs");
        let conf = root.join("conf");
        std::fs::create_dir_all(conf.join("rules")).expect("mkdir");
        std::fs::create_dir_all(root.join("shared/team")).expect("mkdir");
        let cfg = conf.join("config.yaml");
        std::fs::write(
            &cfg,
            "version: 1\nrules_files: [./rules/*.yaml, ../shared/**/*.yaml]\n",
        )
        .expect("write");
        let config = crate::config::load(&cfg).expect("valid");
        // The config path as a user types it: relative, with `./`.
        let w = Watched::from_config(Some(&conf.join(".").join("config.yaml")), &config);
        assert!(w.matters(&conf.join("config.yaml")));
        assert!(w.matters(&conf.join("rules/a.yaml")), "{w:?}");
        assert!(w.matters(&root.join("shared/team/b.yaml")), "{w:?}");
        assert!(w.matters(&root.join("shared/c.yaml")), "{w:?}");
        assert!(!w.matters(&conf.join("rules/a.txt")));
        assert!(w.dirs.contains(&(conf.join("rules"), false)), "{w:?}");
        assert!(w.dirs.contains(&(root.join("shared"), true)), "{w:?}");
        assert!(w.covers_dir(&root.join("shared/new/deeper")));
        assert!(w.covers_dir(&conf.join("rules")));
        assert!(
            !w.covers_dir(&conf.join("rules/sub")),
            "rules/*.yaml is not recursive"
        );
        assert!(!w.covers_dir(&conf.join("data")));
    }
}
