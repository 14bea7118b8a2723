//! The I/O side: read the configuration file, the files it names (admin tokens, the
//! admin state file, rule files by glob, issuers' key and CA files) and hand the texts
//! to the pure parse. No network is touched while loading.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::admin::{
    AdminConfig, AdminState, FileItems, MIN_ADMIN_TOKEN_CHARS, parse_admin_items, refuse_name_clashes,
    without_nulls,
};
use super::error::{ConfigError, ConfigErrors};
use super::model::{Config, ReplayBackend};
use super::parse::{Draft, SourcedRule, assemble, parse_config};

fn read_text(path: &Path) -> Result<String, ConfigError> {
    crate::files::read_regular_text(path, crate::files::MAX_CONFIG_BYTES).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        field: String::new(),
        message: format!("cannot read: {e}"),
    })
}

/// Load a config file and every rule file it names. File I/O only; no network.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_admin(path, None)
}

/// Load a config file, its rule files and the admin API's issuers and rules: `admin`
/// replaces what the state file holds (to validate a change before it is written).
/// With `replay.backend: redis` and no `admin`, the admin state is empty: it lives in
/// Redis, and the caller supplies it.
pub fn load_with_admin(path: &Path, admin: Option<&AdminState>) -> Result<Config, ConfigErrors> {
    let text = read_text(path).map_err(|e| ConfigErrors(vec![e]))?;
    let env = |name: &str| std::env::var(name).ok();
    let read_file = |p: &Path| crate::files::read_regular_file(p, crate::files::MAX_CA_BYTES);
    let mut draft = parse_config(path, &text, &env)?;
    // Not kept while the rule files load.
    drop(text);
    let mut errors = Vec::new();
    let mut admin_state = AdminState::default();
    let (mut admin_issuers, mut admin_rules) = (Vec::new(), Vec::new());
    let redis = matches!(draft.replay.backend, ReplayBackend::Redis(_));
    if let Some(settings) = draft.admin.as_mut() {
        read_admin_tokens(settings, &mut errors);
        admin_state = match admin {
            Some(state) => state.clone(),
            // With Redis the state lives there (`crate::admin_store`), not in a file:
            // empty until the broker reads it from Redis.
            None if redis => AdminState::default(),
            None => read_admin_state(settings, &mut errors),
        };
        let (issuers, rules_made, problems) = parse_admin_items(&admin_state, settings);
        admin_issuers = issuers;
        admin_rules = rules_made;
        errors.extend(problems);
    }
    let files = rule_file_list(path, &draft.rules_files);
    let (assembled, file_items) = with_rule_files(&files, |per_file| {
        let rules = per_file.flat_map(|(rules, problems)| {
            errors.extend(problems);
            rules
        });
        if draft.admin.is_none() {
            // Each file's raw rules are compiled, and dropped, before the next file's
            // are read: a large set never has all its raw rules (about half a kilobyte
            // each) in memory at once.
            return (assemble(draft, rules, &read_file), FileItems::default());
        }
        let rules: Vec<SourcedRule> = rules.collect();
        // The configuration file's own items, before the admin API's join them. Only
        // the admin API reads them (a JSON copy of every rule).
        let file_items = file_items(&draft, &rules);
        // A name both define is one error, under the admin item: the file's item wins
        // nothing either, the load fails and the previous set keeps serving.
        refuse_name_clashes(&draft, &rules, &mut admin_issuers, &mut admin_rules, &mut errors);
        draft.issuers.extend(admin_issuers);
        // The admin API's rules come first.
        let rules = admin_rules.into_iter().chain(rules);
        (assemble(draft, rules, &read_file), file_items)
    });
    match assembled {
        Ok(mut config) if errors.is_empty() => {
            config.admin_state = admin_state;
            config.file_items = Arc::new(file_items);
            Ok(config)
        }
        Ok(_) => Err(ConfigErrors(errors)),
        Err(e) => {
            errors.extend(e.0);
            Err(ConfigErrors(errors))
        }
    }
}

/// `admin.tokens_file`: one token a line (`#` comments), appended to `tokens`.
fn read_admin_tokens(settings: &mut AdminConfig, errors: &mut Vec<ConfigError>) {
    let Some(tokens_file) = &settings.tokens_file else {
        return;
    };
    let problem = |message: String| ConfigError {
        file: tokens_file.clone(),
        line: None,
        field: "admin.tokens_file".into(),
        message,
    };
    match crate::files::read_regular_text(tokens_file, crate::files::MAX_SMALL_BYTES) {
        Ok(text) => {
            for t in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                if t.chars().count() < MIN_ADMIN_TOKEN_CHARS {
                    errors.push(problem(format!(
                        "every token needs at least {MIN_ADMIN_TOKEN_CHARS} characters"
                    )));
                }
                settings.tokens.push(t.to_string());
                settings.tokens_from_file += 1;
            }
        }
        Err(e) => errors.push(problem(format!("cannot read: {e}"))),
    }
    if settings.tokens.is_empty() && errors.is_empty() {
        errors.push(problem("holds no token".into()));
    }
}

/// `admin.state_file`: the admin API's items kept on disk (empty when missing).
fn read_admin_state(settings: &AdminConfig, errors: &mut Vec<ConfigError>) -> AdminState {
    AdminState::read(&settings.state_file).unwrap_or_else(|e| {
        errors.push(ConfigError {
            file: settings.state_file.clone(),
            line: None,
            field: "admin.state_file".into(),
            message: e.to_string(),
        });
        AdminState::default()
    })
}

/// The files one `rules_files` glob matches (relative to the config file at `path`),
/// sorted, test files (`*.test.yaml`) included.
fn glob_files(path: &Path, pattern: &str) -> Result<Vec<PathBuf>, glob::PatternError> {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    // The same normalisation as the watcher's (reload.rs): `./` dropped, `..` resolved.
    let full = crate::reload::normalize_lexically(&base.join(pattern));
    let mut matched: Vec<PathBuf> = glob::glob(&full.to_string_lossy())?
        .filter_map(Result::ok)
        .filter(|p| !p.is_dir())
        .collect();
    matched.sort();
    Ok(matched)
}

/// `fedbroker test`'s default files: every `*.test.yaml` in the directories that hold
/// the files the `rules_files` globs match (the config file's own directory when it
/// has no `rules_files`), sorted per directory. Globs that do not parse are skipped:
/// loading the configuration reports them.
pub fn test_files_beside_rules(path: &Path, globs: &[String]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if globs.is_empty() {
        dirs.push(path.parent().map(Path::to_path_buf).unwrap_or_default());
    }
    for pattern in globs {
        for file in glob_files(path, pattern).unwrap_or_default() {
            let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs.iter().flat_map(|dir| test_files_in(dir)).collect()
}

/// The test files (`*.test.yaml`) directly in `dir` (`""`: the working directory),
/// sorted; an unreadable directory has none.
pub fn test_files_in(dir: &Path) -> Vec<PathBuf> {
    let listing = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    });
    let mut found: Vec<PathBuf> = listing
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| dir.join(e.file_name()))
        .filter(|p| super::is_test_file(p) && !p.is_dir())
        .collect();
    found.sort();
    found
}

/// Every file the `rules_files` globs match (relative to the config file), in sorted
/// order per glob; a glob that does not parse is an error in its place. Test files
/// (`*.test.yaml`) are skipped, whatever the glob.
fn rule_file_list(path: &Path, globs: &[String]) -> Vec<Result<PathBuf, ConfigError>> {
    let mut files = Vec::new();
    for pattern in globs {
        match glob_files(path, pattern) {
            Ok(matched) => files.extend(matched.into_iter().filter(|p| !super::is_test_file(p)).map(Ok)),
            Err(e) => files.push(Err(ConfigError {
                file: path.to_path_buf(),
                line: None,
                field: "rules_files".into(),
                message: format!("invalid glob `{pattern}`: {e}"),
            })),
        }
    }
    files
}

/// At most this many threads read rule files: past a few, the one thread that compiles
/// the rules is the bottleneck, and each more holds another file's rules in memory.
const MAX_LOADERS: usize = 4;

/// A rule file's rules, and its errors.
type LoadedFile = (Vec<SourcedRule>, Vec<ConfigError>);

/// Each rule file's rules and errors, in order.
type PerFile<'a> = &'a mut dyn Iterator<Item = (Vec<SourcedRule>, Vec<ConfigError>)>;

/// Read and parse rule files, in order: `use_them` pulls each file's rules and errors
/// (a glob's error is a file without rules) as it goes. Reading the YAML is most of a
/// large rule set's load time, so with more than one file and more than one core,
/// loader threads (one a core, at most [`MAX_LOADERS`]) each take every n-th file and
/// parse its rules, while this thread hands them to `use_them` (which compiles them) in
/// the files' order. They start when `use_them` first asks for a file. A loader hands
/// over one file at a time (a rendezvous), so at most one file's raw rules a loader and
/// the file being compiled are in memory. A loader that cannot be started leaves its
/// files to this thread.
fn with_rule_files<R>(files: &[Result<PathBuf, ConfigError>], use_them: impl FnOnce(PerFile<'_>) -> R) -> R {
    use std::sync::mpsc;
    let glob_error = |e: &ConfigError| (Vec::new(), vec![e.clone()]);
    let paths: Vec<&PathBuf> = files.iter().filter_map(|f| f.as_ref().ok()).collect();
    let load = |file: &Path| -> LoadedFile {
        match read_text(file) {
            Ok(text) => super::rules::parse_rules_file(file, &text),
            Err(e) => (Vec::new(), vec![e]),
        }
    };
    let loaders = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_LOADERS)
        .min(paths.len());
    if loaders <= 1 {
        return use_them(&mut files.iter().map(|f| match f {
            Ok(file) => load(file),
            Err(e) => glob_error(e),
        }));
    }
    let paths = &paths;
    std::thread::scope(|scope| {
        let start = || -> Vec<Option<mpsc::Receiver<LoadedFile>>> {
            (0..loaders)
                .map(|w| {
                    let (tx, rx) = mpsc::sync_channel::<LoadedFile>(0);
                    std::thread::Builder::new()
                        .name("fedbroker-load-rules".into())
                        // The YAML parser recurses once a level of nesting: the main thread's
                        // stack size, as before these threads.
                        .stack_size(8 << 20)
                        .spawn_scoped(scope, move || {
                            for file in paths.iter().skip(w).step_by(loaders) {
                                if tx.send(load(file)).is_err() {
                                    break;
                                }
                            }
                        })
                        .ok()
                        .map(|_| rx)
                })
                .collect()
        };
        // The loaders start when the first file is asked for: what `use_them` does
        // before (building the issuers, then dropping their raw form) is not in memory
        // beside the first files' rules.
        let mut lanes = Vec::new();
        let mut next = 0;
        let result = use_them(&mut files.iter().map(|f| match f {
            Ok(file) => {
                if lanes.is_empty() {
                    lanes = start();
                }
                // No message: the loader panicked (the scope carries the panic on once
                // every thread is joined) or was never started; this thread loads it.
                let loaded = lanes[next % loaders]
                    .as_ref()
                    .and_then(|rx| rx.recv().ok())
                    .unwrap_or_else(|| load(file));
                next += 1;
                loaded
            }
            Err(e) => glob_error(e),
        }));
        // The loaders end when their lanes close. (`use_them` takes every file: one it
        // left would leave loaders waiting to hand over, and its errors unreported.)
        drop(lanes);
        result
    })
}

/// The configuration file's (and its rule files') issuers and rules, as JSON.
fn file_items(draft: &Draft, rule_files: &[SourcedRule]) -> FileItems {
    FileItems {
        issuers: draft
            .issuers
            .iter()
            .map(|(_, _, raw)| {
                let json = serde_json::to_value(raw).unwrap_or_default();
                (raw.name.clone(), without_nulls(json))
            })
            .collect(),
        rules: draft
            .rules
            .iter()
            .chain(rule_files)
            .map(|s| {
                let json = serde_json::to_value(&s.rule).unwrap_or_default();
                (s.rule.name.clone(), without_nulls(json))
            })
            .collect(),
    }
}
