//! CEL expressions: `match.condition`, `match.actor.condition` and `{expr: '<CEL>'}`
//! values in `issue.subject` / `issue.claims`.
//!
//! An expression is parsed and checked once, when its rule compiles, and evaluated
//! against a [`Scope`] built once per request. The check is the static part of the
//! contract (see the crate docs, "CEL"): the variables, the functions, the size and the
//! shape of the expression. What cannot be known before a request arrives (a missing key,
//! a value of the wrong type) is an evaluation error, and an evaluation error never
//! allows anything.

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr, LiteralValue, operators};
use cel::common::types::{CelBool, CelInt, CelList, CelString, DYN_TYPE, INT_TYPE};
use cel::common::value::{CowVal, Val};
use cel::extractors::This;
use cel::objects::{Key, Map as CelMap};
use cel::{Context, Env, ExecutionError, FunctionContext, Value as CelValue};
use serde_json::{Map, Number, Value};

/// Longest expression accepted, in characters (Google's limit for attribute conditions).
pub const MAX_EXPRESSION_CHARS: usize = 4096;
/// Deepest nesting of an expression's syntax tree.
pub const MAX_EXPRESSION_DEPTH: usize = 32;
/// Most nodes in an expression's syntax tree, after macros (`exists`, `map`, ...) expand.
pub const MAX_EXPRESSION_NODES: usize = 512;
/// Most elements a comprehension (`all`, `exists`, `exists_one`, `map`, `filter`) may
/// iterate over; a longer list or map is an evaluation error.
pub const MAX_ITERATIONS: usize = 1024;
/// Longest string, in bytes, that `+` or a string function may produce.
pub const MAX_STRING_BYTES: usize = 64 * 1024;
/// Longest list that `+` may produce.
pub const MAX_LIST_ITEMS: usize = 4096;
/// The work one evaluation may do, in units of one byte built (by `+` or a string
/// function) or one syntax-tree node evaluated in a comprehension's body per iteration.
pub const MAX_EVALUATION_COST: u64 = 1_000_000;

/// Largest compiled size, in bytes, of a `matches` pattern written in a rule (the regex
/// crate's default is 10 MiB); a pattern that compiles to more is a load error.
pub const MAX_REGEX_BYTES: usize = 1024 * 1024;
/// Largest compiled size of a pattern that was not compiled when the rules loaded (the
/// static check makes every pattern a literal, so this is a second line of defence).
const MAX_DYNAMIC_REGEX_BYTES: usize = 64 * 1024;
/// Longest pattern, in bytes, compiled during an evaluation.
const MAX_DYNAMIC_PATTERN_BYTES: usize = 1024;
/// Budget units charged per byte of a pattern compiled during an evaluation.
const DYNAMIC_COMPILE_UNITS_PER_BYTE: usize = 100;

/// A `matches` pattern, compiled once.
#[derive(Debug)]
pub(crate) struct CompiledPattern {
    regex: regex::Regex,
    /// States of the pattern's Thompson NFA: a match costs at most this times the
    /// input's length (the regex crate's worst case is O(m × n)).
    states: usize,
}

/// Why an expression does not compile: one line, for a [`crate::RuleError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ExprError {
    #[error("the CEL expression is empty")]
    Empty,
    #[error("the CEL expression is {chars} characters long; at most {MAX_EXPRESSION_CHARS} are allowed")]
    TooLong { chars: usize },
    /// cel's parser refused it, at a position (`1:13`).
    #[error("invalid CEL at {position}: {message}")]
    SyntaxAt { position: String, message: String },
    /// cel's parser refused it, without a position.
    #[error("invalid CEL: {0}")]
    Syntax(String),
    #[error("invalid CEL: empty expression")]
    Unspecified,
    #[error("the CEL expression nests deeper than {MAX_EXPRESSION_DEPTH} levels")]
    TooDeep,
    #[error("the CEL expression has more than {MAX_EXPRESSION_NODES} parts; split the rule")]
    TooManyNodes,
    #[error(
        "unknown variable `{0}`: expressions can use `claims`, `request` and `actor` (and the variables of `all`, `exists`, `exists_one`, `map`, `filter`)"
    )]
    UnknownVariable(String),
    #[error("optional list elements are not supported")]
    OptionalListElements,
    #[error("optional map entries are not supported")]
    OptionalMapEntries,
    #[error("message construction (`{0}{{...}}`) is not supported: there are no message types")]
    MessageConstruction(String),
    #[error(
        "nested comprehensions (`all`, `exists`, `exists_one`, `map`, `filter` inside another's body) are not allowed: their cost would grow with the square of the token's size"
    )]
    NestedComprehension,
    #[error(
        "`{0}` is called with the wrong arguments (e.g. `list.exists(x, x == \"a\"))`, `has(claims.key)`)"
    )]
    WrongArguments(String),
    #[error("unknown function `{0}`; available: {standard}, {extra}", standard = STANDARD_FUNCTIONS.join(", "), extra = EXTRA_FUNCTIONS.join(", "))]
    UnknownFunction(String),
    #[error(
        "the pattern of `matches` must be a string literal (patterns are checked when rules load, never taken from a token)"
    )]
    PatternNotLiteral,
    #[error(transparent)]
    Regex(#[from] RegexError),
}

/// A `matches` pattern the regex crates refuse (or find too large); the message is
/// theirs, on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid regular expression in `matches`: {0}")]
pub(crate) struct RegexError(String);

/// Why an expression could not be evaluated for a request. Shown on one line of at most
/// 300 characters (see `one_line`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EvalError {
    NoSuchKey(String),
    UndeclaredReference(String),
    /// A field selected on `null` (typically `actor.sub` without an actor token).
    SelectOnNull,
    /// One of the functions failed (a budget or size limit, a bad argument).
    Function {
        function: String,
        message: String,
    },
    /// Any other interpreter error, as cel words it.
    Other(String),
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            EvalError::NoSuchKey(key) => format!("no such key: {key}"),
            EvalError::UndeclaredReference(name) => format!("undeclared reference to `{name}`"),
            EvalError::SelectOnNull => "field selection on null (`actor` is null when the request has no actor token; test `actor != null` first)".to_owned(),
            EvalError::Function { function, message } => format!("{function}: {message}"),
            EvalError::Other(text) => text.clone(),
        };
        f.write_str(&one_line(&text))
    }
}

impl std::error::Error for EvalError {}

/// Why a CEL result cannot become a JSON value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum JsonError {
    #[error("evaluated to {0}, which JSON cannot hold")]
    Float(f64),
    #[error("evaluated to a {0}, which JSON cannot hold")]
    Type(String),
}

/// The patterns of one expression, by source text.
type Patterns = HashMap<String, Arc<CompiledPattern>>;

/// Compiles a `matches` pattern with a cap on its compiled size.
fn compile_pattern(pattern: &str, size_limit: usize) -> Result<CompiledPattern, RegexError> {
    #[cfg(test)]
    PATTERNS_COMPILED.with(|c| c.set(c.get() + 1));
    let invalid = |e: &dyn std::fmt::Display| RegexError(one_line(&e.to_string()));
    let regex = regex::RegexBuilder::new(pattern)
        .size_limit(size_limit)
        .build()
        .map_err(|e| invalid(&e))?;
    let nfa = regex_automata::nfa::thompson::NFA::compiler()
        .configure(regex_automata::nfa::thompson::NFA::config().nfa_size_limit(Some(size_limit)))
        .build(pattern)
        .map_err(|e| invalid(&e))?;
    Ok(CompiledPattern {
        regex,
        states: nfa.states().len().max(1),
    })
}

#[cfg(test)]
thread_local! {
    /// How many patterns were compiled on this thread.
    pub(crate) static PATTERNS_COMPILED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// How many `matches` calls were answered by a pattern compiled when the rules loaded.
    pub(crate) static PATTERN_CACHE_HITS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

thread_local! {
    /// The compiled patterns of the expression being evaluated, set by
    /// [`Expression::evaluate`] for the duration of the evaluation.
    static PATTERNS: std::cell::RefCell<Option<Arc<Patterns>>> = const { std::cell::RefCell::new(None) };
}

thread_local! {
    /// What is left of the current evaluation's budget. Evaluation is synchronous and
    /// never re-entrant, and [`Expression::evaluate`] resets it: it is per evaluation, not
    /// shared state.
    static BUDGET: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Spends `units` of the current evaluation's budget.
fn charge(units: usize, function: &str) -> Result<(), ExecutionError> {
    let units = units as u64;
    BUDGET.with(|budget| {
        let left = budget.get();
        if units > left {
            budget.set(0);
            Err(ExecutionError::function_error(
                function,
                format!("the expression exceeds its evaluation budget of {MAX_EVALUATION_COST} units"),
            ))
        } else {
            budget.set(left - units);
            Ok(())
        }
    })
}

/// The variables an expression may use.
const VARIABLES: &[&str] = &["claims", "request", "actor"];

/// Type names usable in `type(x) == string`.
const TYPE_NAMES: &[&str] = &[
    "bool",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];

/// Functions of the CEL standard library that expressions may call.
const STANDARD_FUNCTIONS: &[&str] = &[
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "int",
    "uint",
    "double",
    "string",
    "type",
];

/// Functions fedbroker adds; each refuses to build a string over [`MAX_STRING_BYTES`].
const EXTRA_FUNCTIONS: &[&str] = &[
    "lowerAscii",
    "upperAscii",
    "lower",
    "upper",
    "trim",
    "split",
    "join",
    "replace",
    "substring",
    "indexOf",
];

/// Operators and the internal functions macros expand to.
const OPERATORS: &[&str] = &[
    operators::CONDITIONAL,
    operators::LOGICAL_AND,
    operators::LOGICAL_OR,
    operators::LOGICAL_NOT,
    operators::SUBSTRACT,
    operators::ADD,
    operators::MULTIPLY,
    operators::DIVIDE,
    operators::MODULO,
    operators::EQUALS,
    operators::NOT_EQUALS,
    operators::GREATER_EQUALS,
    operators::LESS_EQUALS,
    operators::GREATER,
    operators::LESS,
    operators::NEGATE,
    operators::INDEX,
    operators::NOT_STRICTLY_FALSE,
    operators::IN,
];

/// Wraps every comprehension's range: refuses more than [`MAX_ITERATIONS`] elements.
const RANGE_GUARD: &str = "@fedbroker_range";
/// Wraps every user-written `+`: refuses results over the size caps.
const SIZE_GUARD: &str = "@fedbroker_bounded";
/// Wraps the operands of functions and operators: charges their size to the budget.
const COST_GUARD: &str = "@fedbroker_cost";
/// Replaces `s.matches(re)` / `matches(s, re)`: matches with the pattern compiled when
/// the expression compiled, and charges the match to the budget.
const MATCHES: &str = "@fedbroker_matches";

/// A parsed, checked expression.
#[derive(Debug, Clone)]
pub(crate) struct Expression {
    ast: IdedExpr,
    /// Every `matches` pattern of the expression, compiled once.
    patterns: Arc<Patterns>,
}

impl Expression {
    /// Parses and checks `source`. The error is one line for a [`crate::RuleError`].
    pub(crate) fn compile(source: &str) -> Result<Expression, ExprError> {
        let chars = source.chars().count();
        if source.trim().is_empty() {
            return Err(ExprError::Empty);
        }
        if chars > MAX_EXPRESSION_CHARS {
            return Err(ExprError::TooLong { chars });
        }
        let mut ast = cel::parser::Parser::new()
            .max_recursion_depth(MAX_EXPRESSION_DEPTH as u16)
            .parse(source)
            .map_err(|e| parse_error(&e.to_string()))?;
        let mut checker = Checker::default();
        checker.check(&ast, 1)?;
        let patterns = std::mem::take(&mut checker.patterns);
        guard(&mut ast, None);
        Ok(Expression {
            ast,
            patterns: Arc::new(patterns),
        })
    }

    /// Evaluates against a request's variables.
    pub(crate) fn evaluate(&self, scope: &Scope<'_>) -> Result<CelValue, EvalError> {
        BUDGET.with(|budget| budget.set(MAX_EVALUATION_COST));
        PATTERNS.with(|p| *p.borrow_mut() = Some(self.patterns.clone()));
        let result = CelValue::resolve(&self.ast, &scope.context).map_err(|e| describe(&e));
        PATTERNS.with(|p| *p.borrow_mut() = None);
        result
    }

    /// Forgets the compiled patterns, so that every `matches` compiles at run time.
    #[cfg(test)]
    pub(crate) fn without_compiled_patterns(mut self) -> Expression {
        self.patterns = Arc::new(Patterns::new());
        self
    }
}

/// The variable a claim reference in an expression reads: `claims` (the subject token)
/// or `actor` (the actor token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimRoot {
    Claims,
    Actor,
}

impl Expression {
    /// The top-level claims the expression reads by name, in order (repeats kept):
    /// `claims.x`, `has(claims.x)`, `claims["x"]` and `"x" in claims` (and the same of
    /// `actor`). Keys computed at run time, and `claims` or `actor` shadowed by a
    /// comprehension's variable, are not references.
    pub(crate) fn claim_references(&self) -> Vec<(ClaimRoot, String)> {
        let mut out = Vec::new();
        references(&self.ast, &mut Vec::new(), &mut out);
        out
    }
}

/// The expression inside the run-time guards [`guard`] wrapped around it.
fn unguarded(e: &IdedExpr) -> &IdedExpr {
    match &e.expr {
        Expr::Call(call)
            if call.target.is_none()
                && (call.func_name == COST_GUARD || call.func_name == SIZE_GUARD)
                && call.args.len() == 1 =>
        {
            call.args.first().map_or(e, unguarded)
        }
        _ => e,
    }
}

/// `claims` or `actor` as a variable (not shadowed).
fn claim_root(e: &IdedExpr, bound: &[&str]) -> Option<ClaimRoot> {
    match &unguarded(e).expr {
        Expr::Ident(name) if !bound.contains(&name.as_str()) => match name.as_str() {
            "claims" => Some(ClaimRoot::Claims),
            "actor" => Some(ClaimRoot::Actor),
            _ => None,
        },
        _ => None,
    }
}

fn string_literal(e: &IdedExpr) -> Option<&str> {
    match &unguarded(e).expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.inner()),
        _ => None,
    }
}

fn references<'a>(e: &'a IdedExpr, bound: &mut Vec<&'a str>, out: &mut Vec<(ClaimRoot, String)>) {
    match &e.expr {
        Expr::Select(select) => match claim_root(&select.operand, bound) {
            Some(root) => out.push((root, select.field.clone())),
            None => references(&select.operand, bound, out),
        },
        Expr::Call(call) => {
            // `claims["x"]` and `"x" in claims`.
            let keyed = match (call.func_name.as_str(), call.args.as_slice()) {
                (operators::INDEX, [operand, key]) => Some((operand, key)),
                (operators::IN, [key, operand]) => Some((operand, key)),
                _ => None,
            };
            if let Some((operand, key)) = keyed
                && let (Some(root), Some(key)) = (claim_root(operand, bound), string_literal(key))
            {
                out.push((root, key.to_owned()));
            }
            if let Some(target) = &call.target {
                references(target, bound, out);
            }
            for arg in &call.args {
                references(arg, bound, out);
            }
        }
        Expr::List(list) => list.elements.iter().for_each(|item| references(item, bound, out)),
        Expr::Map(map) => {
            for entry in &map.entries {
                if let EntryExpr::MapEntry(entry) = &entry.expr {
                    references(&entry.key, bound, out);
                    references(&entry.value, bound, out);
                }
            }
        }
        Expr::Comprehension(c) => {
            references(&c.iter_range, bound, out);
            references(&c.accu_init, bound, out);
            let before = bound.len();
            bound.push(&c.accu_var);
            bound.push(&c.iter_var);
            if let Some(var) = &c.iter_var2 {
                bound.push(var);
            }
            references(&c.loop_cond, bound, out);
            references(&c.loop_step, bound, out);
            references(&c.result, bound, out);
            bound.truncate(before);
        }
        Expr::Unspecified | Expr::Literal(_) | Expr::Ident(_) | Expr::Struct(_) => {}
    }
}

/// The functions every expression can call: built once per rule set.
pub(crate) struct Runtime {
    root: Context<'static, 'static>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runtime")
    }
}

impl Default for Runtime {
    fn default() -> Runtime {
        Runtime::new()
    }
}

impl Runtime {
    pub(crate) fn new() -> Runtime {
        let mut env = Env::stdlib();
        // The guards hand their argument back untouched: registered as overloads on
        // borrowed values, they cost a size check, not a copy.
        let guards = [
            env.add_overload(
                RANGE_GUARD,
                "fedbroker_range_dyn_int",
                vec![DYN_TYPE, INT_TYPE],
                range_guard,
            ),
            env.add_overload(SIZE_GUARD, "fedbroker_bounded_dyn", vec![DYN_TYPE], size_guard),
            env.add_overload(COST_GUARD, "fedbroker_cost_dyn", vec![DYN_TYPE], cost_guard),
            env.add_overload(
                MATCHES,
                "fedbroker_matches_dyn_dyn",
                vec![DYN_TYPE, DYN_TYPE],
                matches_guard,
            ),
        ];
        debug_assert!(guards.iter().all(Result::is_ok), "{guards:?}");
        let mut root = Context::with_env(Arc::new(env));
        // The names are fedbroker's own, not the standard library's: these cannot clash.
        let results = [
            root.add_function("lowerAscii", lower_ascii),
            root.add_function("upperAscii", upper_ascii),
            root.add_function("lower", lower),
            root.add_function("upper", upper),
            root.add_function("trim", trim),
            root.add_function("split", split),
            root.add_function("join", join),
            root.add_function("replace", replace),
            root.add_function("substring", substring),
            root.add_function("indexOf", index_of),
        ];
        debug_assert!(results.iter().all(Result::is_ok), "{results:?}");
        Runtime { root }
    }

    /// The variables of one request: `claims`, `request` and `actor`.
    pub(crate) fn scope(
        &self,
        claims: &Map<String, Value>,
        request: Value,
        actor: Option<&Map<String, Value>>,
    ) -> Scope<'_> {
        let mut context = self.root.new_inner_scope();
        context.add_variable_from_value("claims", object_to_cel(claims));
        context.add_variable_from_value("request", json_to_cel(&request));
        context.add_variable_from_value("actor", actor.map_or(CelValue::Null, object_to_cel));
        Scope { context }
    }
}

/// One request's variables, shared by every expression evaluated for it.
pub(crate) struct Scope<'r> {
    context: Context<'r, 'static>,
}

/// Static checks: variables, functions, size, depth, nesting of comprehensions.
#[derive(Default)]
struct Checker<'a> {
    /// Variables bound by the enclosing comprehensions.
    bound: Vec<&'a str>,
    /// Whether we are inside a comprehension's loop body.
    in_loop: bool,
    nodes: usize,
    /// The `matches` patterns, compiled.
    patterns: Patterns,
}

impl<'a> Checker<'a> {
    fn check(&mut self, e: &'a IdedExpr, depth: usize) -> Result<(), ExprError> {
        if depth > MAX_EXPRESSION_DEPTH {
            return Err(ExprError::TooDeep);
        }
        self.nodes += 1;
        if self.nodes > MAX_EXPRESSION_NODES {
            return Err(ExprError::TooManyNodes);
        }
        let next = depth + 1;
        match &e.expr {
            Expr::Unspecified => Err(ExprError::Unspecified),
            Expr::Literal(_) => Ok(()),
            Expr::Ident(name) => {
                if VARIABLES.contains(&name.as_str())
                    || TYPE_NAMES.contains(&name.as_str())
                    || self.bound.contains(&name.as_str())
                {
                    Ok(())
                } else {
                    Err(ExprError::UnknownVariable(name.clone()))
                }
            }
            Expr::Select(select) => self.check(&select.operand, next),
            Expr::Call(call) => {
                self.check_function(call)?;
                if let Some(target) = &call.target {
                    self.check(target, next)?;
                }
                for arg in &call.args {
                    self.check(arg, next)?;
                }
                Ok(())
            }
            Expr::List(list) => {
                if !list.optional_indices.is_empty() {
                    return Err(ExprError::OptionalListElements);
                }
                list.elements.iter().try_for_each(|item| self.check(item, next))
            }
            Expr::Map(map) => map.entries.iter().try_for_each(|entry| match &entry.expr {
                EntryExpr::MapEntry(entry) if !entry.optional => {
                    self.check(&entry.key, next)?;
                    self.check(&entry.value, next)
                }
                _ => Err(ExprError::OptionalMapEntries),
            }),
            Expr::Struct(s) => Err(ExprError::MessageConstruction(s.type_name.clone())),
            Expr::Comprehension(c) => {
                if self.in_loop {
                    return Err(ExprError::NestedComprehension);
                }
                self.check(&c.iter_range, next)?;
                self.check(&c.accu_init, next)?;
                let bound_before = self.bound.len();
                self.bound.push(&c.accu_var);
                self.bound.push(&c.iter_var);
                if let Some(var) = &c.iter_var2 {
                    self.bound.push(var);
                }
                self.in_loop = true;
                let body = self
                    .check(&c.loop_cond, next)
                    .and_then(|()| self.check(&c.loop_step, next));
                self.in_loop = false;
                self.bound.truncate(bound_before + 1); // only the accumulator is left in `result`
                let result = body.and_then(|()| self.check(&c.result, next));
                self.bound.truncate(bound_before);
                result
            }
        }
    }

    fn check_function(&mut self, call: &CallExpr) -> Result<(), ExprError> {
        let name = call.func_name.as_str();
        if OPERATORS.contains(&name) {
            return Ok(());
        }
        if !STANDARD_FUNCTIONS.contains(&name) && !EXTRA_FUNCTIONS.contains(&name) {
            return Err(match name {
                "all" | "exists" | "exists_one" | "map" | "filter" | "has" => {
                    ExprError::WrongArguments(name.to_owned())
                }
                _ => ExprError::UnknownFunction(name.to_owned()),
            });
        }
        if name == "matches" {
            // `s.matches(re)` or `matches(s, re)`: the pattern is the last argument.
            let pattern = match call.args.last().map(|a| &a.expr) {
                Some(Expr::Literal(LiteralValue::String(s))) => s.inner().to_owned(),
                _ => return Err(ExprError::PatternNotLiteral),
            };
            if let std::collections::hash_map::Entry::Vacant(entry) = self.patterns.entry(pattern) {
                let compiled = compile_pattern(entry.key(), MAX_REGEX_BYTES)?;
                entry.insert(Arc::new(compiled));
            }
        }
        Ok(())
    }
}

/// Inserts the run-time guards: every comprehension's range goes through [`RANGE_GUARD`],
/// every `+` written by the rule author through [`SIZE_GUARD`]. The `accu + [x]` steps
/// that `map` and `filter` expand to are left alone: the range guard bounds them, and
/// the interpreter optimises that exact shape.
fn guard(e: &mut IdedExpr, accumulator: Option<&str>) {
    let id = e.id;
    match &mut e.expr {
        Expr::Call(call) => {
            let is_accumulation = call.func_name == operators::ADD
                && matches!(call.args.first().map(|a| &a.expr), Some(Expr::Ident(name)) if Some(name.as_str()) == accumulator);
            if let Some(target) = call.target.as_deref_mut() {
                guard(target, accumulator);
            }
            for arg in &mut call.args {
                guard(arg, accumulator);
            }
            if call.func_name == "matches" {
                // `s.matches(re)` and `matches(s, re)` both become `@fedbroker_matches(s, re)`.
                if let Some(target) = call.target.take() {
                    call.args.insert(0, *target);
                }
                call.func_name = MATCHES.to_owned();
            }
            // Every operand a function or operator reads is charged by its size: that is
            // the work a scan (`contains`, `==`, `in`, `matches`, ...) does on it.
            let metered = !is_accumulation
                && !UNMETERED.contains(&call.func_name.as_str())
                && call.func_name != SIZE_GUARD
                && call.func_name != RANGE_GUARD;
            if metered {
                if let Some(target) = call.target.as_deref_mut() {
                    meter(target);
                }
                call.args.iter_mut().for_each(meter);
            }
            if call.func_name == operators::ADD && !is_accumulation {
                let inner = std::mem::take(&mut e.expr);
                e.expr = Expr::Call(CallExpr {
                    func_name: SIZE_GUARD.to_owned(),
                    target: None,
                    args: vec![IdedExpr { id, expr: inner }],
                });
            }
        }
        Expr::Select(select) => guard(&mut select.operand, accumulator),
        Expr::List(list) => list.elements.iter_mut().for_each(|item| guard(item, accumulator)),
        Expr::Map(map) => {
            for entry in &mut map.entries {
                if let EntryExpr::MapEntry(entry) = &mut entry.expr {
                    guard(&mut entry.key, accumulator);
                    guard(&mut entry.value, accumulator);
                }
            }
        }
        Expr::Comprehension(c) => {
            guard(&mut c.iter_range, accumulator);
            guard(&mut c.accu_init, accumulator);
            let accu = c.accu_var.clone();
            guard(&mut c.loop_cond, Some(&accu));
            guard(&mut c.loop_step, Some(&accu));
            guard(&mut c.result, Some(&accu));
            // Each iteration costs the nodes of the body (and the loop itself).
            let body = count_nodes(&c.loop_cond) + count_nodes(&c.loop_step) + 1;
            let range = std::mem::take(&mut c.iter_range);
            c.iter_range = IdedExpr {
                id: range.id,
                expr: Expr::Call(CallExpr {
                    func_name: RANGE_GUARD.to_owned(),
                    target: None,
                    args: vec![
                        range,
                        IdedExpr {
                            id,
                            expr: Expr::Literal(LiteralValue::Int(CelInt::from(body as i64))),
                        },
                    ],
                }),
            };
        }
        Expr::Unspecified | Expr::Literal(_) | Expr::Ident(_) | Expr::Struct(_) => {}
    }
}

/// Operators that only route values (logic, selection by index): their operands cost
/// nothing beyond evaluating them.
const UNMETERED: &[&str] = &[
    operators::LOGICAL_AND,
    operators::LOGICAL_OR,
    operators::LOGICAL_NOT,
    operators::CONDITIONAL,
    operators::NOT_STRICTLY_FALSE,
    operators::INDEX,
];

/// Wraps an operand in [`COST_GUARD`], unless it is a literal (paid for by the length
/// limit of the expression).
fn meter(operand: &mut IdedExpr) {
    if matches!(operand.expr, Expr::Literal(_)) {
        return;
    }
    let id = operand.id;
    let inner = std::mem::take(&mut operand.expr);
    operand.expr = Expr::Call(CallExpr {
        func_name: COST_GUARD.to_owned(),
        target: None,
        args: vec![IdedExpr { id, expr: inner }],
    });
}

fn count_nodes(e: &IdedExpr) -> usize {
    1 + match &e.expr {
        Expr::Call(call) => {
            call.target.as_deref().map_or(0, count_nodes) + call.args.iter().map(count_nodes).sum::<usize>()
        }
        Expr::Select(select) => count_nodes(&select.operand),
        Expr::List(list) => list.elements.iter().map(count_nodes).sum(),
        Expr::Map(map) => map
            .entries
            .iter()
            .map(|entry| match &entry.expr {
                EntryExpr::MapEntry(entry) => count_nodes(&entry.key) + count_nodes(&entry.value),
                EntryExpr::StructField(field) => count_nodes(&field.value),
            })
            .sum(),
        Expr::Comprehension(c) => {
            count_nodes(&c.iter_range)
                + count_nodes(&c.accu_init)
                + count_nodes(&c.loop_cond)
                + count_nodes(&c.loop_step)
                + count_nodes(&c.result)
        }
        Expr::Unspecified | Expr::Literal(_) | Expr::Ident(_) | Expr::Struct(_) => 0,
    }
}

/// An evaluation error as one short line: `no such key: environment`.
fn describe(error: &ExecutionError) -> EvalError {
    match error {
        ExecutionError::NoSuchKey(key) => EvalError::NoSuchKey(key.to_string()),
        ExecutionError::UndeclaredReference(name) => EvalError::UndeclaredReference(name.to_string()),
        ExecutionError::NoSuchOverload(overload)
            if overload.function() == "_._"
                && overload
                    .argument_types()
                    .first()
                    .is_some_and(|t| t == "null_type") =>
        {
            EvalError::SelectOnNull
        }
        ExecutionError::FunctionError { function, message } => EvalError::Function {
            function: function.to_string(),
            message: message.to_string(),
        },
        other => EvalError::Other(other.to_string()),
    }
}

/// `ERROR: <input>:1:13: Syntax error: ...` as `invalid CEL at 1:13: syntax error: ...`.
fn parse_error(text: &str) -> ExprError {
    let line = one_line(text);
    match line
        .strip_prefix("ERROR: <input>:")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((position, message)) => ExprError::SyntaxAt {
            position: position.to_owned(),
            message: message.to_owned(),
        },
        None => ExprError::Syntax(line),
    }
}

/// The first line of a message, at most 300 characters.
fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

/// A JSON value as CEL: integers that fit are `int`, larger ones `uint`, others `double`.
pub(crate) fn json_to_cel(value: &Value) -> CelValue {
    match value {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => CelValue::Int(i),
            (None, Some(u)) => CelValue::UInt(u),
            (None, None) => CelValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(items) => CelValue::List(Arc::new(items.iter().map(json_to_cel).collect())),
        Value::Object(map) => object_to_cel(map),
    }
}

fn object_to_cel(map: &Map<String, Value>) -> CelValue {
    let entries: HashMap<Key, CelValue> = map
        .iter()
        .map(|(k, v)| (Key::String(Arc::new(k.clone())), json_to_cel(v)))
        .collect();
    CelValue::Map(CelMap {
        map: Arc::new(entries),
    })
}

/// A CEL result as JSON: strings, numbers, booleans, null, lists and maps (keys written
/// as text and sorted, so that the issued token does not depend on hashing).
pub(crate) fn cel_to_json(value: &CelValue) -> Result<Value, JsonError> {
    Ok(match value {
        CelValue::Null => Value::Null,
        CelValue::Bool(b) => Value::Bool(*b),
        CelValue::Int(i) => Value::from(*i),
        CelValue::UInt(u) => Value::from(*u),
        CelValue::Float(f) => Number::from_f64(*f)
            .map(Value::Number)
            .ok_or(JsonError::Float(*f))?,
        CelValue::String(s) => Value::String(s.to_string()),
        CelValue::List(items) => Value::Array(items.iter().map(cel_to_json).collect::<Result<_, _>>()?),
        CelValue::Map(map) => {
            let mut entries: Vec<(String, &CelValue)> =
                map.map.iter().map(|(k, v)| (k.to_string(), v)).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = Map::new();
            for (key, item) in entries {
                out.insert(key, cel_to_json(item)?);
            }
            Value::Object(out)
        }
        other => {
            return Err(JsonError::Type(type_name(other)));
        }
    })
}

/// The CEL type name of a value, for reasons: `string`, `map`, ...
pub(crate) fn type_name(value: &CelValue) -> String {
    value.type_of().to_string()
}

// ---- fedbroker's functions -------------------------------------------------------

fn checked(s: String) -> Result<CelValue, ExecutionError> {
    charge(s.len(), "string")?;
    if s.len() > MAX_STRING_BYTES {
        Err(ExecutionError::function_error(
            "string",
            format!(
                "result of {} bytes exceeds the limit of {MAX_STRING_BYTES}",
                s.len()
            ),
        ))
    } else {
        Ok(CelValue::String(Arc::new(s)))
    }
}

fn lower_ascii(This(s): This<Arc<String>>) -> Result<CelValue, ExecutionError> {
    checked(s.to_ascii_lowercase())
}

fn upper_ascii(This(s): This<Arc<String>>) -> Result<CelValue, ExecutionError> {
    checked(s.to_ascii_uppercase())
}

fn lower(This(s): This<Arc<String>>) -> Result<CelValue, ExecutionError> {
    checked(s.to_lowercase())
}

fn upper(This(s): This<Arc<String>>) -> Result<CelValue, ExecutionError> {
    checked(s.to_uppercase())
}

fn trim(This(s): This<Arc<String>>) -> Result<CelValue, ExecutionError> {
    checked(s.trim().to_owned())
}

/// `s.split(sep)` / `split(s, sep)`: an empty separator splits into characters.
fn split(This(s): This<Arc<String>>, sep: Arc<String>) -> Result<CelValue, ExecutionError> {
    // Each part costs its bytes plus a little for the element itself.
    charge(
        s.len() + 16 * s.chars().count().min(s.len() / sep.len().max(1) + 1),
        "split",
    )?;
    let parts: Vec<CelValue> = if sep.is_empty() {
        s.chars()
            .map(|c| CelValue::String(Arc::new(c.to_string())))
            .collect()
    } else {
        s.split(sep.as_str())
            .map(|p| CelValue::String(Arc::new(p.to_owned())))
            .collect()
    };
    Ok(CelValue::List(Arc::new(parts)))
}

/// `list.join()` / `list.join(sep)`: the size is checked before anything is built.
fn join(ftx: &FunctionContext, This(items): This<Arc<Vec<CelValue>>>) -> Result<CelValue, ExecutionError> {
    let sep = match ftx.args.as_slice() {
        [] => String::new(),
        [sep] => match CelValue::try_from(sep.as_ref())? {
            CelValue::String(s) => s.to_string(),
            other => {
                return Err(ftx.error(format!(
                    "the separator must be a string, not {}",
                    type_name(&other)
                )));
            }
        },
        _ => return Err(ftx.error("takes at most one argument, the separator")),
    };
    let mut parts = Vec::with_capacity(items.len());
    let mut total = sep.len().saturating_mul(items.len().saturating_sub(1));
    for item in items.iter() {
        match item {
            CelValue::String(s) => {
                total = total.saturating_add(s.len());
                parts.push(s.as_str());
            }
            other => return Err(ftx.error(format!("can only join strings, found {}", type_name(other)))),
        }
    }
    if total > MAX_STRING_BYTES {
        return Err(ftx.error(format!(
            "result of {total} bytes exceeds the limit of {MAX_STRING_BYTES}"
        )));
    }
    charge(total, "join")?;
    Ok(CelValue::String(Arc::new(parts.join(&sep))))
}

/// `s.replace(old, new)`: every occurrence; the size is checked before anything is built.
fn replace(
    ftx: &FunctionContext,
    This(s): This<Arc<String>>,
    old: Arc<String>,
    new: Arc<String>,
) -> Result<CelValue, ExecutionError> {
    if old.is_empty() {
        return Err(ftx.error("the text to replace must not be empty"));
    }
    let count = s.matches(old.as_str()).count();
    let total = (s.len() - count * old.len()).saturating_add(count.saturating_mul(new.len()));
    if total > MAX_STRING_BYTES {
        return Err(ftx.error(format!(
            "result of {total} bytes exceeds the limit of {MAX_STRING_BYTES}"
        )));
    }
    charge(s.len() + total, "replace")?;
    Ok(CelValue::String(Arc::new(s.replace(old.as_str(), new.as_str()))))
}

/// `s.substring(start)` / `s.substring(start, end)`, in characters.
fn substring(
    ftx: &FunctionContext,
    This(s): This<Arc<String>>,
    start: i64,
) -> Result<CelValue, ExecutionError> {
    let len = s.chars().count() as i64;
    let end = match ftx.args.get(1) {
        None => len,
        Some(end) => match CelValue::try_from(end.as_ref())? {
            CelValue::Int(end) => end,
            other => return Err(ftx.error(format!("the end must be an int, not {}", type_name(&other)))),
        },
    };
    if start < 0 || end < start || end > len {
        return Err(ftx.error(format!(
            "range [{start}, {end}) is outside the string of {len} characters"
        )));
    }
    charge(s.len(), "substring")?;
    let text: String = s
        .chars()
        .skip(start as usize)
        .take((end - start) as usize)
        .collect();
    Ok(CelValue::String(Arc::new(text)))
}

/// `s.indexOf(sub)`: the character index of the first occurrence, or -1.
fn index_of(This(s): This<Arc<String>>, sub: Arc<String>) -> Result<CelValue, ExecutionError> {
    charge(s.len(), "indexOf")?;
    Ok(CelValue::Int(match s.find(sub.as_str()) {
        Some(byte) => s[..byte].chars().count() as i64,
        None => -1,
    }))
}

/// `@fedbroker_matches(s, re)`: `s.matches(re)` with the pattern compiled when the rules
/// loaded. A call costs the input's length (plus one) times the states of the pattern's
/// NFA, the regex crate's worst case. A pattern that was not compiled at load (none is,
/// today: the static check requires literals) is compiled here under a small size cap
/// and charged per byte of the pattern as well.
fn matches_guard<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let pattern = args
        .pop()
        .ok_or_else(ExecutionError::missing_argument_or_target)?;
    let subject = args
        .pop()
        .ok_or_else(ExecutionError::missing_argument_or_target)?;
    let Some(subject) = subject.downcast_ref::<CelString>() else {
        return Err(ExecutionError::function_error(
            "matches",
            format!("can only match a string, not {}", subject.get_type().name()),
        ));
    };
    let Some(pattern) = pattern.downcast_ref::<CelString>() else {
        return Err(ExecutionError::function_error(
            "matches",
            format!("the pattern must be a string, not {}", pattern.get_type().name()),
        ));
    };
    let (subject, pattern) = (subject.inner(), pattern.inner());
    let cached = PATTERNS.with(|p| p.borrow().as_ref().and_then(|m| m.get(pattern).cloned()));
    let compiled = match cached {
        Some(compiled) => {
            #[cfg(test)]
            PATTERN_CACHE_HITS.with(|c| c.set(c.get() + 1));
            compiled
        }
        None => {
            if pattern.len() > MAX_DYNAMIC_PATTERN_BYTES {
                return Err(ExecutionError::function_error(
                    "matches",
                    format!(
                        "a pattern of {} bytes exceeds the limit of {MAX_DYNAMIC_PATTERN_BYTES}",
                        pattern.len()
                    ),
                ));
            }
            charge(pattern.len().max(1) * DYNAMIC_COMPILE_UNITS_PER_BYTE, "matches")?;
            Arc::new(
                compile_pattern(pattern, MAX_DYNAMIC_REGEX_BYTES)
                    .map_err(|e| ExecutionError::function_error("matches", e))?,
            )
        }
    };
    charge((subject.len() + 1).saturating_mul(compiled.states), "matches")?;
    Ok(CowVal::owned(CelBool::from(compiled.regex.is_match(subject))))
}

/// `@fedbroker_range(range, body_nodes)`.
fn range_guard<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let body = args
        .pop()
        .and_then(|n| n.downcast_ref::<CelInt>().map(|n| *n.inner()))
        .ok_or_else(ExecutionError::missing_argument_or_target)?;
    let range = args
        .pop()
        .ok_or_else(ExecutionError::missing_argument_or_target)?;
    let count = range.as_sizer().map_or(0, |s| *s.size().inner());
    if count > MAX_ITERATIONS as i64 {
        return Err(ExecutionError::function_error(
            "comprehension",
            format!("may iterate over at most {MAX_ITERATIONS} elements, got {count}"),
        ));
    }
    charge((count.max(0) * body.max(1)) as usize, "comprehension")?;
    Ok(range)
}

/// `@fedbroker_cost(operand)`: a string costs its bytes, a list or map its entries.
fn cost_guard<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let value = args
        .pop()
        .ok_or_else(ExecutionError::missing_argument_or_target)?;
    let units = match value.downcast_ref::<CelString>() {
        Some(s) => s.inner().len(),
        None => value
            .as_sizer()
            .map_or(1, |s| (*s.size().inner()).max(1) as usize),
    };
    charge(units, "cost")?;
    Ok(value)
}

fn size_guard<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let value = args
        .pop()
        .ok_or_else(ExecutionError::missing_argument_or_target)?;
    if let Some(s) = value.downcast_ref::<CelString>() {
        let len = s.inner().len();
        charge(len, "+")?;
        if len > MAX_STRING_BYTES {
            return Err(ExecutionError::function_error(
                "+",
                format!("result of {len} bytes exceeds the limit of {MAX_STRING_BYTES}"),
            ));
        }
    } else if let Some(list) = value.downcast_ref::<CelList>() {
        let len = list.as_sizer().map_or(0, |s| *s.size().inner());
        charge(16 * len.max(0) as usize, "+")?;
        if len > MAX_LIST_ITEMS as i64 {
            return Err(ExecutionError::function_error(
                "+",
                format!("result of {len} elements exceeds the limit of {MAX_LIST_ITEMS}"),
            ));
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(source: &str) -> Result<Value, String> {
        let runtime = Runtime::new();
        let Value::Object(claims) = json!({"s": "Hello, World", "n": 3, "l": ["a", "b"]}) else {
            unreachable!()
        };
        let scope = runtime.scope(&claims, json!({"scopes": []}), None);
        let expr = Expression::compile(source).map_err(|e| e.to_string())?;
        run_in(&expr, &scope)
    }

    /// Evaluates, with every error as its message.
    fn run_in(expr: &Expression, scope: &Scope<'_>) -> Result<Value, String> {
        let value = expr.evaluate(scope).map_err(|e| e.to_string())?;
        cel_to_json(&value).map_err(|e| e.to_string())
    }

    #[test]
    fn every_listed_function_is_callable() {
        let cases: &[(&str, Value)] = &[
            ("size(claims.s)", json!(12)),
            ("claims.s.size()", json!(12)),
            ("claims.s.contains(\"World\")", json!(true)),
            ("claims.s.startsWith(\"Hello\")", json!(true)),
            ("claims.s.endsWith(\"World\")", json!(true)),
            ("claims.s.matches(\"^H.*d$\")", json!(true)),
            ("matches(claims.s, \"o, W\")", json!(true)),
            ("int(\"42\") + claims.n", json!(45)),
            ("uint(claims.n)", json!(3)),
            ("double(claims.n)", json!(3.0)),
            ("string(claims.n)", json!("3")),
            ("type(claims.s) == string", json!(true)),
            ("claims.s.lowerAscii()", json!("hello, world")),
            ("claims.s.upperAscii()", json!("HELLO, WORLD")),
            ("lower(\"ÄB\")", json!("äb")),
            ("upper(claims.s)", json!("HELLO, WORLD")),
            ("\"  x \".trim()", json!("x")),
            ("claims.s.split(\", \")", json!(["Hello", "World"])),
            ("split(\"ab\", \"\")", json!(["a", "b"])),
            ("claims.l.join()", json!("ab")),
            ("claims.l.join(\"-\")", json!("a-b")),
            ("claims.s.replace(\"o\", \"0\")", json!("Hell0, W0rld")),
            ("claims.s.substring(7)", json!("World")),
            ("claims.s.substring(0, 5)", json!("Hello")),
            ("claims.s.indexOf(\"World\")", json!(7)),
            ("claims.s.indexOf(\"nope\")", json!(-1)),
            ("claims.l.map(x, x + x)", json!(["aa", "bb"])),
            ("claims.l.filter(x, x == \"b\")", json!(["b"])),
            ("claims.l.exists_one(x, x == \"b\")", json!(true)),
            ("claims.l.all(x, size(x) == 1)", json!(true)),
            ("has(claims.s) && !has(claims.t)", json!(true)),
            ("request.scopes == [] ? \"none\" : \"some\"", json!("none")),
        ];
        for (source, want) in cases {
            assert_eq!(run(source).as_ref(), Ok(want), "{source}");
        }
        let listed: Vec<&str> = STANDARD_FUNCTIONS
            .iter()
            .chain(EXTRA_FUNCTIONS)
            .copied()
            .collect();
        for name in listed {
            assert!(
                cases
                    .iter()
                    .any(|(source, _)| source.contains(&format!("{name}("))),
                "{name} is listed but not exercised"
            );
        }
    }

    fn run_on(claims: Value, expr: &Expression) -> Result<Value, String> {
        let runtime = Runtime::new();
        let Value::Object(claims) = claims else {
            unreachable!()
        };
        let scope = runtime.scope(&claims, json!({"scopes": []}), None);
        run_in(expr, &scope)
    }

    fn compiled() -> usize {
        PATTERNS_COMPILED.with(std::cell::Cell::get)
    }

    #[test]
    fn a_literal_pattern_is_compiled_once_when_the_rules_load() {
        let before = compiled();
        // The same pattern in both call styles: one compilation.
        let expr =
            Expression::compile(r#"claims.l.exists(g, g.matches('^x[0-9]+$') || matches(g, '^x[0-9]+$'))"#)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(compiled() - before, 1);
        let claims = json!({"l": (0..50).map(|i| format!("g{i}")).collect::<Vec<_>>()});
        let hits = PATTERN_CACHE_HITS.with(std::cell::Cell::get);
        for _ in 0..10 {
            assert_eq!(run_on(claims.clone(), &expr), Ok(json!(false)));
        }
        // 10 evaluations of 50 elements, two calls each: all answered by the one compiled
        // pattern, none compiled again.
        assert_eq!(PATTERN_CACHE_HITS.with(std::cell::Cell::get) - hits, 1000);
        assert_eq!(compiled() - before, 1);
    }

    #[test]
    fn every_match_is_charged_to_the_budget() {
        let groups: Vec<String> = (0..1024).map(|i| format!("g{i}")).collect();
        let claims = json!({ "groups": groups });
        // A Unicode class is a large automaton: 1,024 matches of it are over the budget
        // (before, each call compiled the pattern again, uncharged: seconds per request).
        let unicode = Expression::compile(r#"claims.groups.exists(g, g.matches('\\p{L}+\\p{N}*x'))"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let over = |result: Result<Value, String>| {
            result
                .as_ref()
                .is_err_and(|e| e.ends_with("the expression exceeds its evaluation budget of 1000000 units"))
        };
        let result = run_on(claims.clone(), &unicode);
        assert!(over(result.clone()), "{result:?}");
        // The same walk with an ASCII pattern is within it.
        let ascii = Expression::compile(r#"claims.groups.exists(g, g.matches('^[a-z]+[0-9]*x$'))"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(run_on(claims.clone(), &ascii), Ok(json!(false)));
        // One long input costs in proportion to its length.
        let long = json!({"s": "a".repeat(60_000)});
        let one = Expression::compile(r#"claims.s.matches('\\w+x')"#).unwrap_or_else(|e| panic!("{e}"));
        let result = run_on(long, &one);
        assert!(over(result.clone()), "{result:?}");
    }

    #[test]
    fn patterns_have_a_size_cap() {
        // Compiled at load: over 1 MiB is a load error.
        let err = Expression::compile(r#"claims.s.matches('\\p{L}{100}')"#)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(
                |e| e.starts_with("invalid regular expression in `matches`") && e.contains("size limit")
            ),
            "{err:?}"
        );
        // Not compiled at load: compiled per call, charged, and capped much lower.
        let before = compiled();
        let expr = Expression::compile(r#"claims.s.matches('^H.*d$')"#)
            .unwrap_or_else(|e| panic!("{e}"))
            .without_compiled_patterns();
        assert_eq!(run_on(json!({"s": "Hello, World"}), &expr), Ok(json!(true)));
        assert_eq!(run_on(json!({"s": "Hello"}), &expr), Ok(json!(false)));
        assert_eq!(compiled() - before, 3);
        let big = Expression::compile(r#"claims.s.matches('\\p{L}{10}')"#)
            .unwrap_or_else(|e| panic!("{e}"))
            .without_compiled_patterns();
        let err = run_on(json!({"s": "Hello"}), &big).err();
        assert!(
            err.as_deref().is_some_and(
                |e| e.starts_with("matches: invalid regular expression") && e.contains("size limit")
            ),
            "{err:?}"
        );
        // Type errors are reasons, not panics.
        let number = Expression::compile(r#"claims.n.matches('x')"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            run_on(json!({"n": 1}), &number),
            Err("matches: can only match a string, not int".to_owned())
        );
    }

    #[test]
    fn function_errors_are_reasons() {
        let cases: &[(&str, &str)] = &[
            (
                "claims.s.substring(20)",
                "substring: range [20, 12) is outside the string of 12 characters",
            ),
            (
                "claims.s.replace(\"\", \"x\")",
                "replace: the text to replace must not be empty",
            ),
            ("[1].join()", "join: can only join strings, found int"),
            ("claims.missing", "no such key: missing"),
        ];
        for (source, want) in cases {
            assert_eq!(
                run(source).as_ref().map_err(String::as_str),
                Err(*want),
                "{source}"
            );
        }
    }
}
