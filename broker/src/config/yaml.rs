//! YAML plumbing: parsing with every duplicate key reported, turning a node's position
//! into a line, and a serde failure into a [`ConfigError`] with its field path.

use std::path::Path;

use marked_yaml::loader::LoaderOptions;
use marked_yaml::{LoadError, Node};
use serde::de::DeserializeOwned;

use super::error::{ConfigError, Errors};

/// An empty value, `~` or `null`: YAML's ways of writing nothing.
pub(super) fn is_null(s: &marked_yaml::types::MarkedScalarNode) -> bool {
    s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
}

pub(super) fn line_of(node: &Node) -> Option<usize> {
    node.span().start().map(|m| m.line())
}

pub(super) fn load_error(file: &Path, e: &LoadError) -> ConfigError {
    use LoadError::*;
    let (marker, message) = match e {
        TopLevelMustBeMapping(m) => (Some(*m), "the top level must be a mapping".to_string()),
        TopLevelMustBeSequence(m) => (Some(*m), "the top level must be a list".to_string()),
        UnexpectedAnchor(m) => (Some(*m), "YAML anchors and aliases are not supported".into()),
        MappingKeyMustBeScalar(m) => (Some(*m), "mapping keys must be plain strings".into()),
        UnexpectedTag(m) => (Some(*m), "YAML tags are not supported".into()),
        ScanError(m, se) => (Some(*m), format!("invalid YAML: {}", se.info())),
        DuplicateKey(inner) => (
            inner.key.span().start().copied(),
            format!(
                "duplicate key `{}` (first defined on line {})",
                inner.key.as_str(),
                inner
                    .prev_key
                    .span()
                    .start()
                    .map(|m| m.line())
                    .unwrap_or_default()
            ),
        ),
    };
    ConfigError {
        file: file.to_path_buf(),
        line: marker.map(|m| m.line()),
        field: String::new(),
        message,
    }
}

/// Parse YAML whose top level is a mapping or (for rule files) a list.
pub(super) fn parse_yaml(file: &Path, text: &str) -> Result<Node, ConfigError> {
    if text.trim().is_empty() {
        return Err(empty_file(file));
    }
    load(text, true).map_err(|e| load_error(file, &e))
}

/// The loader itself: a mapping at the top, else a list. `strict`: stop at the first
/// duplicate key; otherwise the last occurrence of each repeated key wins.
fn load(text: &str, strict: bool) -> Result<Node, LoadError> {
    let options = || LoaderOptions::default().error_on_duplicate_keys(strict);
    // The loader must be told which to expect, and one told wrong reads the whole file
    // before it says so: guess from the first characters, and ask again when it was wrong.
    let list = looks_like_a_list(text);
    let first = match list {
        true => marked_yaml::parse_yaml_with_options(0, text, options().toplevel_sequence()),
        false => marked_yaml::parse_yaml_with_options(0, text, options()),
    };
    match first {
        Err(LoadError::TopLevelMustBeMapping(_)) if !list => {
            marked_yaml::parse_yaml_with_options(0, text, options().toplevel_sequence())
        }
        Err(LoadError::TopLevelMustBeSequence(_)) if list => {
            marked_yaml::parse_yaml_with_options(0, text, options())
        }
        other => other,
    }
}

/// Whether the document's top level looks like a list: after blank lines, comments,
/// directives and a `---` marker, a `[` or a block entry (`-` and a space, a tab or the
/// line's end). Only a guess for [`load`], which asks again when it was wrong. (Not the
/// parser's first event: inside a flow collection the scanner cannot tell where a key
/// ends, so for a `[...]` or `{...}` document it reads the whole text first.)
pub(super) fn looks_like_a_list(text: &str) -> bool {
    let is_break = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    for line in text.trim_start_matches('\u{feff}').lines() {
        let mut node = line.trim_start();
        if node.is_empty() || node.starts_with('#') || line.starts_with('%') {
            continue;
        }
        if let Some(after) = node.strip_prefix("---")
            && after.chars().next().is_none_or(is_break)
        {
            node = after.trim_start();
            if node.is_empty() || node.starts_with('#') {
                continue;
            }
        }
        return node.starts_with('[')
            || node
                .strip_prefix('-')
                .is_some_and(|r| r.chars().next().is_none_or(is_break));
    }
    false
}

/// Parse YAML like [`parse_yaml`], but report every duplicate key (at any depth) and go
/// on: the document is loaded with the last occurrence of each repeated key, so the
/// file's other errors are reported too. Errors go to `errors`; `None` when the YAML
/// cannot be loaded at all.
///
/// The loader stops at the first duplicate key, so a file it loads is read once; the
/// pass over the parser's events that finds every duplicate runs only for a file it
/// refuses.
pub(super) fn parse_yaml_all(file: &Path, text: &str, errors: &mut Vec<ConfigError>) -> Option<Node> {
    if text.trim().is_empty() {
        errors.push(empty_file(file));
        return None;
    }
    match load(text, true) {
        Ok(node) => Some(node),
        Err(LoadError::DuplicateKey(_)) => {
            errors.extend(duplicate_keys(file, text));
            load(text, false)
                .map_err(|e| errors.push(load_error(file, &e)))
                .ok()
        }
        Err(e) => {
            // The loader stops at its first error, which may not be the first duplicate.
            errors.extend(duplicate_keys(file, text));
            errors.push(load_error(file, &e));
            None
        }
    }
}

/// Which list [`load_streaming`] hands over item by item.
#[derive(Clone, Copy)]
pub(super) enum Streamed<'k> {
    /// The top level, which must be a list.
    TopList,
    /// The value of this key of the top-level mapping, when it is a list (the top
    /// level must be a mapping).
    Under(&'k str),
}

/// Load a document as [`load`] would (strictly: a repeated key is refused), except that
/// the items of one list (`streamed`) go to `each` as soon as each is complete and are
/// not kept: that list is an empty list in the tree returned (with its own position). A
/// large rule file, or the issuers of a large configuration, never exist as one tree
/// (about twenty times their text). (A document written as one flow collection, `[...]`
/// or `{...}`, is still scanned whole before its first item: see [`looks_like_a_list`].)
/// The nodes, their positions and what is refused are the loader's. `None` when the top
/// level is not what `streamed` needs, the document is empty, or the YAML does not load
/// (a scan error, a duplicate key, an anchor, an alias, a tag, a key that is not a
/// scalar): the caller drops what it was handed and loads the tree, which reports the
/// errors as for any other file.
pub(super) fn load_streaming(text: &str, streamed: Streamed<'_>, each: &mut dyn FnMut(Node)) -> Option<Node> {
    use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode, Marker, Span};
    use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};

    /// A mapping or list being filled.
    enum Open {
        /// Its span is set once it ends.
        Mapping {
            map: MarkedMappingNode,
            key: Option<MarkedScalarNode>,
        },
        List {
            start: Marker,
            items: Vec<Node>,
            /// Its items go to `each`.
            streamed: bool,
        },
    }
    struct Builder<'a, 'k> {
        each: &'a mut dyn FnMut(Node),
        streamed: Streamed<'k>,
        open: Vec<Open>,
        root: Option<Node>,
        refused: bool,
    }
    impl Builder<'_, '_> {
        /// Whether a list starting here is the streamed one; `None` when no container
        /// may start here (at the top when `streamed` wants the other kind, after the
        /// document's node, or as a mapping's key).
        fn list_here(&self, is_list: bool) -> Option<bool> {
            match (self.open.last(), self.streamed) {
                _ if self.root.is_some() => None,
                (None, Streamed::TopList) => is_list.then_some(true),
                (None, Streamed::Under(_)) => (!is_list).then_some(false),
                (Some(Open::Mapping { key: None, .. }), _) => None,
                (Some(Open::Mapping { key: Some(k), .. }), Streamed::Under(under)) => {
                    Some(self.open.len() == 1 && k.as_str() == under)
                }
                _ => Some(false),
            }
        }
        /// A node is complete: the document's, an item of the streamed list, or a value
        /// of the innermost open container.
        fn complete(&mut self, node: Node) {
            match self.open.last_mut() {
                None => self.root = Some(node),
                Some(Open::List { streamed: true, .. }) => (self.each)(node),
                Some(Open::List { items, .. }) => items.push(node),
                Some(Open::Mapping { map, key }) => match key.take() {
                    Some(k) if !map.contains_key(&k) => {
                        map.insert(k, node);
                    }
                    _ => self.refused = true,
                },
            }
        }
    }
    impl MarkedEventReceiver for Builder<'_, '_> {
        fn on_event(&mut self, ev: Event, mark: yaml_rust2::scanner::Marker) {
            if self.refused {
                return;
            }
            // The same positions as marked-yaml's loader gives.
            let mark = Marker::new(0, mark.index(), mark.line(), mark.col() + 1);
            match ev {
                Event::SequenceStart(0, None) => match self.list_here(true) {
                    Some(streamed) => self.open.push(Open::List {
                        start: mark,
                        items: Vec::new(),
                        streamed,
                    }),
                    None => self.refused = true,
                },
                Event::MappingStart(0, None) => match self.list_here(false) {
                    Some(_) => self.open.push(Open::Mapping {
                        map: MarkedMappingNode::new_empty(Span::new_start(mark)),
                        key: None,
                    }),
                    None => self.refused = true,
                },
                Event::SequenceEnd => match self.open.pop() {
                    Some(Open::List { start, items, .. }) => {
                        let span = Span::new_with_marks(start, mark);
                        self.complete(MarkedSequenceNode::new(span, items).into());
                    }
                    _ => self.refused = true,
                },
                Event::MappingEnd => match self.open.pop() {
                    Some(Open::Mapping { mut map, key: None }) => {
                        map.span_mut().set_end(Some(mark));
                        self.complete(map.into());
                    }
                    _ => self.refused = true,
                },
                Event::Scalar(value, _, 0, None) if !self.open.is_empty() => {
                    let node = MarkedScalarNode::new(Span::new_start(mark), value);
                    match self.open.last_mut() {
                        Some(Open::Mapping { key: key @ None, .. }) => *key = Some(node),
                        _ => self.complete(node.into()),
                    }
                }
                Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd => {}
                // A scalar at the top, an anchor, an alias, a tag.
                _ => self.refused = true,
            }
        }
    }

    let mut builder = Builder {
        each,
        streamed,
        open: Vec::new(),
        root: None,
        refused: false,
    };
    // One document, as the loader reads.
    let scanned = Parser::new(text.chars()).load(&mut builder, false);
    match (scanned, builder.refused) {
        (Ok(()), false) => builder.root,
        _ => None,
    }
}

pub(super) fn empty_file(file: &Path) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line: None,
        field: String::new(),
        message: "the file is empty".into(),
    }
}

/// Every repeated key of every mapping in `text`, with the line of the repetition, the
/// line of the first occurrence and the field path. A pass over the parser's events
/// (marked-yaml stops at the first duplicate). Nothing for YAML that does not scan: the
/// loader reports that.
pub(super) fn duplicate_keys(file: &Path, text: &str) -> Vec<ConfigError> {
    use std::collections::HashMap;
    use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
    use yaml_rust2::scanner::Marker;

    struct Frame {
        /// `Some` for a mapping: its keys so far, with their lines.
        keys: Option<HashMap<String, usize>>,
        /// The field path of this mapping or list.
        path: String,
        /// Mapping: the next scalar is a key. List: the index of the next item.
        want_key: bool,
        key: String,
        index: usize,
        /// A mapping or list used as a key (not supported; marked-yaml refuses it).
        is_key: bool,
    }
    #[derive(Default)]
    struct Finder {
        stack: Vec<Frame>,
        found: Vec<(usize, String, String, usize)>,
    }
    impl Finder {
        /// The path of the value about to start, and whether it is a key.
        fn next_child(&self) -> (String, bool) {
            match self.stack.last() {
                Some(f) if f.keys.is_some() && f.want_key => (f.path.clone(), true),
                Some(f) if f.keys.is_some() => (join_path(&f.path, &f.key), false),
                Some(f) => (format!("{}[{}]", f.path, f.index), false),
                None => (String::new(), false),
            }
        }
        /// A value (scalar, alias or container) of the current frame is complete.
        fn value_done(&mut self) {
            if let Some(f) = self.stack.last_mut() {
                if f.keys.is_some() {
                    f.want_key = true;
                } else {
                    f.index += 1;
                }
            }
        }
    }
    impl MarkedEventReceiver for Finder {
        fn on_event(&mut self, ev: Event, mark: Marker) {
            match ev {
                Event::Scalar(value, ..) => {
                    let Some(f) = self.stack.last_mut() else { return };
                    if let (Some(keys), true) = (f.keys.as_mut(), f.want_key) {
                        match keys.get(&value) {
                            Some(first) => {
                                self.found
                                    .push((mark.line(), value.clone(), f.path.clone(), *first))
                            }
                            None => {
                                keys.insert(value.clone(), mark.line());
                            }
                        }
                        f.key = value;
                        f.want_key = false;
                    } else {
                        self.value_done();
                    }
                }
                Event::Alias(_) => self.value_done(),
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let (path, is_key) = self.next_child();
                    if let (true, Some(parent)) = (is_key, self.stack.last_mut()) {
                        parent.want_key = false;
                    }
                    self.stack.push(Frame {
                        keys: matches!(ev, Event::MappingStart(..)).then(HashMap::new),
                        path,
                        want_key: true,
                        key: String::new(),
                        index: 0,
                        is_key,
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    if let Some(done) = self.stack.pop()
                        && !done.is_key
                    {
                        self.value_done();
                    }
                }
                _ => {}
            }
        }
    }

    let mut finder = Finder::default();
    let mut parser = Parser::new(text.chars());
    // On a scan error, report what was found before it; the loader reports the error.
    let _ = parser.load(&mut finder, false);
    finder
        .found
        .into_iter()
        .map(|(line, key, path, first)| ConfigError {
            file: file.to_path_buf(),
            line: Some(line),
            field: join_path(&path, &key),
            message: format!("duplicate key `{key}` (first defined on line {first})"),
        })
        .collect()
}

/// Deserialize one node, reporting a failure with its line and field path.
pub(super) fn from_node<T: DeserializeOwned>(node: &Node, section: &str, errors: &mut Errors) -> Option<T> {
    match marked_yaml::from_node::<T>(node) {
        Ok(v) => Some(v),
        Err(e) => {
            let line = e.start_mark().map(|m| m.line()).or_else(|| line_of(node));
            let path = e.path().unwrap_or("").trim_matches('.');
            let field = match (section.is_empty(), path.is_empty()) {
                (_, true) => section.to_string(),
                (true, false) => path.to_string(),
                (false, false) => format!("{section}.{path}"),
            };
            let message = inner_message(&e);
            errors.list.push(ConfigError {
                file: errors.file.clone(),
                line,
                field,
                message,
            });
            None
        }
    }
}

pub(super) fn inner_message(e: &marked_yaml::FromNodeError) -> String {
    use marked_yaml::Error;
    match &**e {
        Error::UnknownFieldError(field, expected, _) => {
            format!(
                "unknown field `{field}`, expected one of: {}",
                expected.join(", ")
            )
        }
        Error::NotBoolean(_) => "expected true or false".into(),
        Error::IntegerParseFailure(err, _) => format!("expected a whole number ({err})"),
        Error::FloatParseFailure(err, _) => format!("expected a number ({err})"),
        Error::Other(msg, _) => msg.clone(),
    }
}

pub(super) fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Walk a mapping that may hold only `key`: `value` gets that key's value in its place
/// among the keys, and every other key is reported as an unknown field.
pub(super) fn with_sole_key<'n>(
    map: &'n marked_yaml::types::MarkedMappingNode,
    key: &str,
    errors: &mut Errors,
    mut value: impl FnMut(&'n Node, &mut Errors),
) {
    for (k, v) in map.iter() {
        if k.as_str() == key {
            value(v, errors);
        } else {
            let unknown = Node::Scalar(k.clone());
            errors.at(
                Some(&unknown),
                k.as_str(),
                format!("unknown field `{}`, expected `{key}`", k.as_str()),
            );
        }
    }
}

pub(super) fn child<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    node.as_mapping().and_then(|m| m.get_node(key))
}

/// Follow a rule-relative field path ("match.claims.environment") to its YAML node.
/// Keys may themselves contain dots, so at each level the longest matching key wins.
pub(super) fn node_at<'n>(node: &'n Node, path: &str) -> &'n Node {
    let mut current = node;
    let mut rest = path;
    'outer: while !rest.is_empty() {
        let Some(map) = current.as_mapping() else { break };
        let mut best: Option<(&Node, usize)> = None;
        for (k, v) in map.iter() {
            let key = k.as_str();
            let prefix = rest == key || (rest.starts_with(key) && rest[key.len()..].starts_with('.'));
            if prefix && best.is_none_or(|(_, len)| key.len() > len) {
                best = Some((v, key.len()));
            }
        }
        match best {
            Some((v, len)) => {
                current = v;
                rest = rest[len..].trim_start_matches('.');
                continue 'outer;
            }
            None => break,
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The items [`load_streaming`] hands over from a top-level list, or `None` when it
    /// refuses the text.
    fn items(text: &str) -> Option<Vec<Node>> {
        let mut got = Vec::new();
        let root = load_streaming(text, Streamed::TopList, &mut |n| got.push(n))?;
        assert_eq!(root.as_sequence().map(|s| s.len()), Some(0), "{text:?}");
        Some(got)
    }

    /// Item by item, a list is the loader's tree: the same nodes, positions included
    /// (their `Debug` form shows every span), in every shape YAML writes a list.
    #[test]
    fn a_list_read_item_by_item_is_the_loaders_tree() {
        let texts = [
            "- name: a\n  match:\n    issuer: gha\n    audiences: [x, \"y\"]\n- {name: b, match: {issuer: 'q', claims: {k: [1, {z: ~}]}}}\n",
            "# comment\n---\n- a\n-\n- - nested\n  - [1, 2]\n- key: |\n    two\n    lines\n  other: >-\n    folded\n...\n",
            "[{\"name\": \"r0\", \"match\": {\"issuer\": \"iss0\"}}, plain, [], {}]",
            "- {\"name\":\"r0\",\"match\":{\"issuer\":\"iss0\",\"subject\":\"system:serviceaccount:ns0:sa0\"}}\n- {\"name\":\"r1\"}\n",
            "[]",
            "- \"\"\n- null\n- 'quoted: colon'\n- ? complex\n  : key\n",
        ];
        for text in texts {
            let tree = load(text, true).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            let list = tree.as_sequence().unwrap_or_else(|| panic!("{text:?} is a list"));
            let streamed = items(text).unwrap_or_else(|| panic!("{text:?} is read item by item"));
            assert_eq!(format!("{:?}", &**list), format!("{streamed:?}"), "{text:?}");
        }
    }

    /// The list under a key of the top-level mapping, item by item: the items are the
    /// loader's, and the rest of the tree is the loader's with that list emptied (its
    /// position kept). A list under the same key deeper down is not the one.
    #[test]
    fn a_list_under_a_key_read_item_by_item_is_the_loaders() {
        let text = "version: 1\nissuers:\n  - name: a\n    jwks: {keys: [{kty: EC}]}\n  - {name: b}\nserver:\n  issuers: [x]\nlast: [1]\n";
        let mut tree = load(text, true).expect("loads");
        let mut got = Vec::new();
        let root = load_streaming(text, Streamed::Under("issuers"), &mut |n| got.push(n)).expect("streamed");
        let list = tree
            .as_mapping_mut()
            .and_then(|m| m.get_mut("issuers"))
            .and_then(Node::as_sequence_mut)
            .expect("a list");
        assert_eq!(format!("{:?}", &**list), format!("{got:?}"));
        list.clear();
        assert_eq!(format!("{tree:?}"), format!("{root:?}"));
        assert_eq!(got.len(), 2);
        // A list at the top is not a mapping's; without the key, nothing is handed over.
        assert!(load_streaming("- a\n", Streamed::Under("issuers"), &mut |_| {}).is_none());
        let mut none = 0;
        assert!(load_streaming("version: 1\n", Streamed::Under("issuers"), &mut |_| none += 1).is_some());
        assert_eq!(none, 0);
    }

    /// What the loader refuses, or what is not a list, is left to the tree (which
    /// reports it): a mapping or a scalar at the top, a duplicate key at any depth, an
    /// anchor, an alias, a tag, a key that is not a scalar, YAML that does not scan.
    #[test]
    fn what_is_not_a_plain_list_is_left_to_the_tree() {
        for text in [
            "rules: []\n",
            "just text\n",
            "- a: 1\n  a: 2\n",
            "- {a: {b: 1, b: 2}}\n",
            "- &x a\n- *x\n",
            "- !tag a\n",
            "- !!str a\n",
            "- [a]: b\n",
            "- {a: 1}: b\n",
            "- a: [1, 2\n",
            "- a\nb: c\n",
        ] {
            assert!(items(text).is_none(), "{text:?}");
        }
    }

    #[test]
    fn the_top_level_kind_is_guessed_from_the_first_characters() {
        let lists = [
            "- a\n- b\n",
            "---\n- a\n",
            "--- [a]\n",
            "%YAML 1.2\n---\n-\n",
            "# rules\n\n[{name: a}]\n",
            "[\n{\"name\": \"a\"}\n]",
            "\u{feff}  - a\n",
            "-",
        ];
        for list in lists {
            assert!(looks_like_a_list(list), "{list:?}");
        }
        for other in [
            "rules: []\n",
            "{\"rules\": []}",
            "a",
            "",
            "-a: 1\n",
            "---x: 1\n",
            "key: [1]\n",
            ": :",
        ] {
            assert!(!looks_like_a_list(other), "{other:?}");
        }
        // A wrong guess costs a second read, not a wrong answer.
        let file = Path::new("r.yaml");
        let mut errors = Vec::new();
        assert!(parse_yaml_all(file, "[a]: b\n", &mut errors).is_none());
        assert!(
            errors[0].message.contains("mapping keys must be plain strings"),
            "{errors:?}"
        );
        let map = parse_yaml_all(file, "--- # a mapping\n-x: 1\n", &mut Vec::new()).expect("a mapping");
        assert!(map.as_mapping().is_some());
        // Whichever it is taken for, broken YAML is the loader's to report.
        let mut errors = Vec::new();
        assert!(parse_yaml_all(Path::new("r.yaml"), "[unclosed", &mut errors).is_none());
        assert_eq!(errors.len(), 1, "{errors:?}");
    }

    #[test]
    fn lists_and_mappings_load_and_every_duplicate_is_reported_once() {
        let file = Path::new("r.yaml");
        let mut errors = Vec::new();
        let list = parse_yaml_all(file, "- {name: a}\n- {name: b}\n", &mut errors).expect("a list");
        assert_eq!(list.as_sequence().map(|s| s.len()), Some(2));
        let map = parse_yaml_all(file, "rules:\n  - {name: a}\n", &mut errors).expect("a mapping");
        assert!(map.as_mapping().is_some());
        assert!(errors.is_empty(), "{errors:?}");

        let text = "- name: a\n  name: b\n- match: {x: 1, x: 2}\n";
        let loaded = parse_yaml_all(file, text, &mut errors).expect("loaded with the last of each key");
        let lines: Vec<_> = errors.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(lines, [(Some(2), "[0].name"), (Some(3), "[1].match.x")]);
        let first = loaded.as_sequence().and_then(|s| s.first()).expect("an item");
        assert_eq!(
            child(first, "name").and_then(Node::as_scalar).map(|s| s.as_str()),
            Some("b")
        );

        let mut errors = Vec::new();
        assert!(parse_yaml_all(file, "- a\nb: c\n", &mut errors).is_none());
        assert_eq!(errors.len(), 1, "{errors:?}");

        // A duplicate before YAML that does not scan: both are reported.
        let mut errors = Vec::new();
        assert!(parse_yaml_all(file, "- name: a\n  name: b\n- [unclosed\n", &mut errors).is_none());
        assert!(errors[0].message.contains("duplicate key `name`"), "{errors:?}");
        assert!(errors[1].message.contains("invalid YAML"), "{errors:?}");
    }
}
