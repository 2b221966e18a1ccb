//! The API server's one CEL environment (the `cel` crate), shared by ValidatingAdmissionPolicy
//! (`vap.rs`) and CustomResourceDefinition validation rules (`celrules.rs`): the standard
//! library and macros, the strings and lists extensions, and Kubernetes' own libraries as far as
//! they are written here (lists: `isSorted`, `sum`, `min`, `max`, `indexOf`, `lastIndexOf`;
//! regex: `find`, `findAll`; URLs: `url`, `isURL` and the URL getters; sets: `sets.contains`,
//! `sets.equivalent`, `sets.intersects`; quantities: `quantity`, `isQuantity` and their methods;
//! `duration()` as an int of nanoseconds).
//!
//! [`compile`] parses an expression and checks what the crate does not check on its own: every
//! identifier is a declared variable (or a comprehension's), and every function exists, so an
//! unknown function or a typo is a compile error (cel-go's message) instead of a silent runtime
//! failure. Compiled programs are cached by their text.
//!
//! [`eval`] runs a program under a cost limit: every comprehension (`all`, `exists`, `map`,
//! `filter`, ...) is charged the size of what it iterates before it starts, so nested
//! comprehensions over big lists stop at [`PER_CALL_LIMIT`] instead of holding the server.
//! Expressions without comprehensions are bounded by their own size and the request's.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr};
use cel::common::types::{DYN_TYPE, INT_TYPE, LIST_TYPE, MAP_TYPE, STRING_TYPE};
use cel::common::value::{CowVal, Val};
use cel::{Context, Env, ExecutionError, Value};
use serde_json::Value as Json;

/// Cost units one evaluation may spend (upstream's `PerCallLimit` is 1,000,000 of cel-go's units,
/// which count every operation; ours count comprehension iterations, a few operations each): a
/// comprehension costs the number of elements it iterates, an evaluation 1. About a second of a
/// debug build's CPU, a fraction of that in release.
pub const PER_CALL_LIMIT: u64 = 250_000;

/// Cost units all the rules of one custom object may spend together (upstream's
/// `RuntimeCELCostBudget`, ten per-call limits).
pub const RUNTIME_BUDGET: u64 = 2_500_000;

/// The (internal) function each comprehension's range goes through to be charged.
const CHARGE: &str = "@strata_charge";
const COST_EXCEEDED: &str = "operation cancelled: actual cost limit exceeded";

/// A compile error, formatted as cel-go formats its issues
/// (`ERROR: <input>:1:6: undeclared reference to 'foo' (in container '')` and the snippet).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct CompileError(pub String);

impl CompileError {
    /// The same issue (position and snippet) with another message.
    pub fn with_message(self, msg: &str) -> CompileError {
        let Some((head, rest)) = self.0.split_once('\n') else { return self };
        let position = head.splitn(5, ':').take(4).collect::<Vec<_>>().join(":");
        CompileError(format!("{position}: {msg}\n{rest}"))
    }
}

/// Why an evaluation gave no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// The per-call limit was reached.
    #[error("{COST_EXCEEDED}")]
    Cost,
    /// A call with arguments no overload takes (upstream: "no such overload").
    #[error("no such overload: {0}")]
    Overload(String),
    /// Anything else (`no such key: x`, division by zero, ...).
    #[error("{0}")]
    Other(String),
}

/// A checked, instrumented expression.
#[derive(Debug)]
pub struct Program {
    expr: IdedExpr,
    /// The declared variables it reads.
    uses: BTreeSet<String>,
    /// Field selections on declared variables (`self.spec.x` is `["self", "spec", "x"]`).
    selections: Vec<Vec<String>>,
}

impl Program {
    /// Does the expression read the variable `name`?
    pub fn uses(&self, name: &str) -> bool {
        self.uses.contains(name)
    }

    /// Every chain of field selections starting at a declared variable: `self.spec.x` (and
    /// `has(self.spec.x)`) is `["self", "spec", "x"]`.
    pub fn selections(&self) -> &[Vec<String>] {
        &self.selections
    }
}

impl Program {
    /// A worst-case cost estimate in the units [`eval`] charges (plus one per expression node):
    /// every comprehension costs what its range may hold times its body. `size` gives the most
    /// elements a value may have by its path from a declared variable (`["self", "spec", "l"]`;
    /// `"@items"` steps into a list's elements or a map's values), `None` when unknown, which
    /// counts as `unknown`.
    pub fn estimate(&self, size: &dyn Fn(&[String]) -> Option<u64>, unknown: u64) -> u64 {
        let mut env: Vec<(String, Vec<String>)> = self.uses.iter().map(|v| (v.clone(), vec![v.clone()])).collect();
        estimate(&self.expr, &mut env, size, unknown)
    }
}

/// The path from a declared variable that `e` reads, if it reads one by field selections.
fn path_of(e: &IdedExpr, env: &[(String, Vec<String>)]) -> Option<Vec<String>> {
    match &e.expr {
        Expr::Ident(name) => env.iter().rev().find(|(n, _)| n == name).map(|(_, p)| p.clone()),
        Expr::Select(s) if !s.test => path_of(&s.operand, env).map(|mut p| {
            p.push(s.field.clone());
            p
        }),
        Expr::Call(c) if c.func_name == CHARGE && c.args.len() == 1 => path_of(&c.args[0], env),
        _ => None,
    }
}

/// The most elements `e` may have when a comprehension iterates it: by its path; a `map` or
/// `filter` of something, at most that thing's; a list literal's length; `s.split(...)` of a
/// string by its path, at most the string's length (`size` of a string's path is its maxLength).
fn range_size(e: &IdedExpr, env: &[(String, Vec<String>)], size: &dyn Fn(&[String]) -> Option<u64>) -> Option<u64> {
    if let Some(p) = path_of(e, env) {
        return size(&p);
    }
    match &e.expr {
        Expr::Comprehension(c) => range_size(&c.iter_range, env, size),
        Expr::Call(c) if c.func_name == CHARGE && c.args.len() == 1 => range_size(&c.args[0], env, size),
        Expr::Call(c) if c.func_name == "split" => c.target.as_deref().and_then(|t| range_size(t, env, size)),
        Expr::List(l) => Some(l.elements.len() as u64),
        _ => None,
    }
}

fn estimate(e: &IdedExpr, env: &mut Vec<(String, Vec<String>)>, size: &dyn Fn(&[String]) -> Option<u64>, unknown: u64) -> u64 {
    let sum = |xs: &mut dyn Iterator<Item = &IdedExpr>, env: &mut Vec<(String, Vec<String>)>| xs.fold(1u64, |acc, x| acc.saturating_add(estimate(x, env, size, unknown)));
    match &e.expr {
        Expr::Comprehension(c) => {
            let range = path_of(&c.iter_range, env);
            let n = range_size(&c.iter_range, env, size).unwrap_or(unknown);
            let outside = sum(&mut [&c.iter_range, &c.accu_init].into_iter(), env);
            let depth = env.len();
            let element = range.map(|mut p| {
                p.push("@items".to_string());
                p
            });
            env.push((c.iter_var.clone(), element.unwrap_or_default()));
            let body = sum(&mut [&c.loop_cond, &c.loop_step].into_iter(), env);
            env.truncate(depth);
            let result = estimate(&c.result, env, size, unknown);
            outside.saturating_add(n.saturating_mul(body)).saturating_add(result)
        }
        Expr::Select(s) => 1u64.saturating_add(estimate(&s.operand, env, size, unknown)),
        Expr::Call(call) => sum(&mut call.target.as_deref().into_iter().chain(call.args.iter()), env),
        Expr::List(l) => sum(&mut l.elements.iter(), env),
        Expr::Map(m) => {
            let mut parts: Vec<&IdedExpr> = Vec::new();
            for entry in &m.entries {
                match &entry.expr {
                    EntryExpr::MapEntry(me) => parts.extend([&me.key, &me.value]),
                    EntryExpr::StructField(f) => parts.push(&f.value),
                }
            }
            sum(&mut parts.into_iter(), env)
        }
        Expr::Struct(st) => {
            let parts: Vec<&IdedExpr> = st.entries.iter().filter_map(|en| if let EntryExpr::StructField(f) = &en.expr { Some(&f.value) } else { None }).collect();
            sum(&mut parts.into_iter(), env)
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => 1,
    }
}

/// cel-go's "undefined field" issue for the last field of a selection chain, placed at its dot.
pub fn undefined_field(source: &str, chain: &[String]) -> CompileError {
    let mut at = 0;
    let mut found = 0;
    for f in chain.iter().skip(1) {
        let needle = format!(".{f}");
        let mut from = at;
        while let Some(i) = source.get(from..).and_then(|s| s.find(&needle)).map(|i| i + from) {
            let end = i + needle.len();
            if !source[end..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                found = i;
                break;
            }
            from = i + 1;
        }
        at = found + 1;
    }
    let before = source.get(..found).unwrap_or(source);
    let line = before.matches('\n').count() as isize + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as isize + 1;
    let field = chain.last().map_or("", String::as_str);
    CompileError(issue(source, line, col, &format!("undefined field '{field}'")))
}

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(environment()));

fn environment() -> Env {
    let mut env = Env::stdlib();
    let add = |what: &str, r: Result<(), cel::DeclarationError>| {
        if let Err(e) = r {
            tracing::error!(what, error = %e, "a CEL library function could not be declared");
        }
    };
    add("strings", env.add_extension(cel::extensions::strings));
    add("lists", env.add_extension(cel::extensions::lists));
    add(CHARGE, env.add_overload(CHARGE, "strata_charge_dyn", vec![DYN_TYPE], charge));
    add("isSorted", env.add_member_overload("isSorted", "list_is_sorted", LIST_TYPE, vec![], lists::is_sorted));
    add("sum", env.add_member_overload("sum", "list_sum", LIST_TYPE, vec![], lists::sum));
    add("min", env.add_member_overload("min", "list_min", LIST_TYPE, vec![], lists::min));
    add("max", env.add_member_overload("max", "list_max", LIST_TYPE, vec![], lists::max));
    add("indexOf", env.add_member_overload("indexOf", "list_index_of", LIST_TYPE, vec![DYN_TYPE], lists::index_of));
    add("lastIndexOf", env.add_member_overload("lastIndexOf", "list_last_index_of", LIST_TYPE, vec![DYN_TYPE], lists::last_index_of));
    add("find", env.add_member_overload("find", "string_find", STRING_TYPE, vec![STRING_TYPE], regex_lib::find));
    add("findAll", env.add_member_overload("findAll", "string_find_all", STRING_TYPE, vec![STRING_TYPE], regex_lib::find_all));
    add("findAll", env.add_member_overload("findAll", "string_find_all_n", STRING_TYPE, vec![STRING_TYPE, INT_TYPE], regex_lib::find_all_n));
    add("url", env.add_overload("url", "string_to_url", vec![STRING_TYPE], urls::url));
    add("isURL", env.add_overload("isURL", "is_url_string", vec![STRING_TYPE], urls::is_url));
    for (name, f) in [
        ("getScheme", urls::get_scheme as cel::common::functions::Function),
        ("getHost", urls::get_host),
        ("getHostname", urls::get_hostname),
        ("getPort", urls::get_port),
        ("getEscapedPath", urls::get_escaped_path),
        ("getQuery", urls::get_query),
    ] {
        add(name, env.add_member_overload(name, &format!("url_{name}"), MAP_TYPE, vec![], f));
    }
    for (name, f) in [("sets.contains", sets::contains as cel::common::functions::Function), ("sets.equivalent", sets::equivalent), ("sets.intersects", sets::intersects)] {
        add(name, env.add_overload(name, name, vec![LIST_TYPE, LIST_TYPE], f));
    }
    add("quantity", env.add_overload("quantity", "string_to_quantity", vec![STRING_TYPE], quantities::quantity));
    add("isQuantity", env.add_overload("isQuantity", "is_quantity_string", vec![STRING_TYPE], quantities::is_quantity));
    for (name, f) in [
        ("isLessThan", quantities::is_less_than as cel::common::functions::Function),
        ("isGreaterThan", quantities::is_greater_than),
        ("compareTo", quantities::compare_to),
        ("add", quantities::add),
        ("sub", quantities::sub),
    ] {
        add(name, env.add_member_overload(name, &format!("quantity_{name}"), MAP_TYPE, vec![DYN_TYPE], f));
    }
    for (name, f) in [
        ("asInteger", quantities::as_integer as cel::common::functions::Function),
        ("asApproximateFloat", quantities::as_approximate_float),
        ("sign", quantities::sign),
        ("isInteger", quantities::is_integer),
    ] {
        add(name, env.add_member_overload(name, &format!("quantity_{name}"), MAP_TYPE, vec![], f));
    }
    add("duration", env.add_overload("duration", "string_to_duration", vec![STRING_TYPE], durations::duration));
    env
}

thread_local! {
    static SPENT: Cell<u64> = const { Cell::new(0) };
    static LIMIT: Cell<u64> = const { Cell::new(PER_CALL_LIMIT) };
}

fn charge<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let v = args.pop().ok_or_else(|| ExecutionError::invalid_argument_count(1, 0))?;
    let n = v.as_sizer().map_or(1, |s| (*s.size().inner()).max(1) as u64);
    let spent = SPENT.with(|c| {
        let s = c.get().saturating_add(n);
        c.set(s);
        s
    });
    if spent > LIMIT.with(Cell::get) {
        return Err(ExecutionError::function_error(CHARGE, COST_EXCEEDED));
    }
    Ok(v)
}

// ---- compiling ----

/// Identifiers that name types (`type(x) == string`) or function namespaces.
const GLOBAL_IDENTS: &[&str] = &["bool", "bytes", "double", "dyn", "int", "list", "map", "null_type", "string", "type", "uint", "optional", "sets", "strings", "lists"];

static CACHE: LazyLock<Mutex<HashMap<(String, Vec<String>), Arc<Program>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));
static KNOWN: LazyLock<Mutex<HashMap<String, bool>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// At most this many compiled programs are cached (then the cache starts over).
const CACHE_LIMIT: usize = 4096;

/// Parse and check `source` with `vars` declared; cached by text.
pub fn compile(source: &str, vars: &[&str]) -> Result<Arc<Program>, CompileError> {
    let key = (source.to_string(), vars.iter().map(|v| v.to_string()).collect::<Vec<_>>());
    if let Some(p) = CACHE.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(p.clone());
    }
    let (mut expr, info) = ENV.parser().parse_with_source_info(source).map_err(|errs| {
        CompileError(errs.errors.iter().map(|e| issue(source, e.pos.0, e.pos.1, &e.msg)).collect::<Vec<_>>().join("\n"))
    })?;
    let mut checker = Checker { source, info: &info, scope: vars.iter().map(|v| v.to_string()).collect(), declared: vars, uses: BTreeSet::new(), selections: Vec::new(), errors: Vec::new() };
    checker.check(&expr);
    if !checker.errors.is_empty() {
        return Err(CompileError(checker.errors.join("\n")));
    }
    let (uses, selections) = (checker.uses, checker.selections);
    instrument(&mut expr);
    let program = Arc::new(Program { expr, uses, selections });
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(key, program.clone());
    Ok(program)
}

/// One issue as cel-go prints it: position (1-based line and column), message, the line and a
/// caret under the column.
fn issue(source: &str, line: isize, col: isize, msg: &str) -> String {
    let text = source.lines().nth((line - 1).max(0) as usize).unwrap_or("");
    format!("ERROR: <input>:{line}:{col}: {msg}\n | {text}\n | {}^", ".".repeat((col - 1).max(0) as usize))
}

struct Checker<'a> {
    source: &'a str,
    info: &'a cel::common::ast::SourceInfo,
    scope: Vec<String>,
    declared: &'a [&'a str],
    uses: BTreeSet<String>,
    selections: Vec<Vec<String>>,
    errors: Vec<String>,
}

impl Checker<'_> {
    fn error(&mut self, id: u64, msg: String) {
        let (line, col) = match self.info.offset_for(id) {
            Some((start, _)) => {
                // Offsets count bytes; one inside a character falls back to the whole source.
                let before = self.source.get(..start as usize).unwrap_or(self.source);
                let line = before.matches('\n').count() as isize + 1;
                let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as isize + 1;
                (line, col)
            }
            None => (1, 1),
        };
        self.errors.push(issue(self.source, line, col, &msg));
    }

    fn in_scope(&self, name: &str) -> bool {
        self.scope.iter().any(|s| s == name)
    }

    fn check(&mut self, e: &IdedExpr) {
        match &e.expr {
            Expr::Ident(name) => {
                if self.in_scope(name) {
                    if self.declared.contains(&name.as_str()) {
                        self.uses.insert(name.clone());
                    }
                } else if !GLOBAL_IDENTS.contains(&name.as_str()) {
                    self.error(e.id, format!("undeclared reference to '{name}' (in container '')"));
                }
            }
            Expr::Select(s) => {
                // A chain of selections from a declared variable not shadowed by a
                // comprehension's.
                let mut chain = vec![s.field.clone()];
                let mut at = &s.operand;
                loop {
                    match &at.expr {
                        Expr::Select(inner) => {
                            chain.push(inner.field.clone());
                            at = &inner.operand;
                        }
                        Expr::Ident(root) => {
                            let shadowed = self.scope[self.declared.len()..].contains(root);
                            if self.declared.contains(&root.as_str()) && !shadowed {
                                chain.push(root.clone());
                                chain.reverse();
                                self.selections.push(chain);
                            }
                            break;
                        }
                        _ => break,
                    }
                }
                self.check(&s.operand)
            }
            Expr::Call(call) => self.call(e.id, call),
            Expr::Comprehension(c) => {
                self.check(&c.iter_range);
                self.check(&c.accu_init);
                let depth = self.scope.len();
                self.scope.push(c.accu_var.clone());
                self.check(&c.result);
                self.scope.push(c.iter_var.clone());
                if let Some(v2) = &c.iter_var2 {
                    self.scope.push(v2.clone());
                }
                self.check(&c.loop_cond);
                self.check(&c.loop_step);
                self.scope.truncate(depth);
            }
            Expr::List(l) => l.elements.iter().for_each(|x| self.check(x)),
            Expr::Map(m) => {
                for entry in &m.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(me) => {
                            self.check(&me.key);
                            self.check(&me.value);
                        }
                        EntryExpr::StructField(f) => self.check(&f.value),
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        self.check(&f.value);
                    }
                }
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    fn call(&mut self, id: u64, call: &CallExpr) {
        let name = call.func_name.as_str();
        let operator = name.starts_with(['_', '@', '!']) || name == "-_";
        if operator {
            call.target.iter().for_each(|t| self.check(t));
        } else {
            match call.target.as_deref() {
                // `sets.contains(a, b)`: a namespaced global function.
                Some(IdedExpr { expr: Expr::Ident(ns), .. }) if !self.in_scope(ns) && known(&format!("{ns}.{name}")) => {}
                Some(t) => {
                    self.check(t);
                    if !known(name) {
                        self.error(id, format!("undeclared reference to '{name}' (in container '')"));
                    }
                }
                None => {
                    if !known(name) {
                        self.error(id, format!("undeclared reference to '{name}' (in container '')"));
                    }
                }
            }
        }
        call.args.iter().for_each(|a| self.check(a));
    }
}

/// Does the environment declare a function (or member function) of this name?
fn known(name: &str) -> bool {
    let mut cache = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(k) = cache.get(name) {
        return *k;
    }
    // The crate offers no lookup by name; declaring a context function of the same name is
    // refused exactly when the environment has one.
    let mut probe = Context::with_env(ENV.clone());
    let k = matches!(probe.add_function(name, |a: i64| a), Err(cel::DeclarationError::OverloadConflict { .. }));
    cache.insert(name.to_string(), k);
    k
}

/// Route every comprehension's range through [`charge`].
fn instrument(e: &mut IdedExpr) {
    match &mut e.expr {
        Expr::Comprehension(c) => {
            let range = std::mem::take(&mut c.iter_range);
            c.iter_range = IdedExpr { id: range.id, expr: Expr::Call(CallExpr { func_name: CHARGE.to_string(), target: None, args: vec![range] }) };
            if let Expr::Call(call) = &mut c.iter_range.expr {
                call.args.iter_mut().for_each(instrument);
            }
            for x in [&mut c.accu_init, &mut c.loop_cond, &mut c.loop_step, &mut c.result] {
                instrument(x);
            }
        }
        Expr::Select(s) => instrument(&mut s.operand),
        Expr::Call(call) => {
            if let Some(t) = call.target.as_deref_mut() {
                instrument(t);
            }
            call.args.iter_mut().for_each(instrument);
        }
        Expr::List(l) => l.elements.iter_mut().for_each(instrument),
        Expr::Map(m) => {
            for entry in &mut m.entries {
                match &mut entry.expr {
                    EntryExpr::MapEntry(me) => {
                        instrument(&mut me.key);
                        instrument(&mut me.value);
                    }
                    EntryExpr::StructField(f) => instrument(&mut f.value),
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &mut s.entries {
                if let EntryExpr::StructField(f) = &mut entry.expr {
                    instrument(&mut f.value);
                }
            }
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

// ---- evaluating ----

/// Evaluate `program` with `vars` bound, spending at most `limit` cost units; returns the value
/// and what it cost.
pub fn eval(program: &Program, vars: &[(&str, Value)], limit: u64) -> (Result<Value, EvalError>, u64) {
    let mut ctx = Context::with_env(ENV.clone());
    for (name, v) in vars {
        ctx.add_variable_from_value(*name, v.clone());
    }
    SPENT.with(|c| c.set(1));
    LIMIT.with(|c| c.set(limit));
    let result = Value::resolve(&program.expr, &ctx);
    let spent = SPENT.with(Cell::get);
    let result = result.map_err(|e| match e {
        ExecutionError::FunctionError { function, .. } if function == CHARGE => EvalError::Cost,
        ExecutionError::NoSuchOverload(o) => EvalError::Overload(o.to_string()),
        ExecutionError::NoSuchKey(k) => EvalError::Other(format!("no such key: {k}")),
        other => EvalError::Other(other.to_string()),
    });
    (result, spent)
}

/// Compile and evaluate at once (ValidatingAdmissionPolicy's expressions, whose variables are
/// not fixed): `Err` with the compile or evaluation error's text.
pub fn run(source: &str, vars: &[(&str, Value)]) -> Result<Value, String> {
    let names: Vec<&str> = vars.iter().map(|(n, _)| *n).collect();
    let program = compile(source, &names).map_err(|e| format!("compilation failed: {e}"))?;
    eval(&program, vars, PER_CALL_LIMIT).0.map_err(|e| e.to_string())
}

/// A JSON value as CEL sees a schemaless Kubernetes object: integers are `int`, other numbers
/// `double`.
pub fn value(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(a) => Value::List(Arc::new(a.iter().map(value).collect())),
        Json::Object(m) => Value::from(m.iter().map(|(k, v)| (k.clone(), value(v))).collect::<HashMap<String, Value>>()),
    }
}

/// A value of ours back as the crate's boxed value.
fn owned<'b, 'v>(v: Value) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let boxed: Box<dyn Val> = v.try_into()?;
    Ok(CowVal::Owned(boxed))
}

fn values(args: &[CowVal<'_, '_>]) -> Result<Vec<Value>, ExecutionError> {
    args.iter().map(|a| Value::try_from(a.as_ref())).collect()
}

fn list_arg(v: &Value, function: &str) -> Result<Arc<Vec<Value>>, ExecutionError> {
    match v {
        Value::List(l) => Ok(l.clone()),
        other => Err(ExecutionError::function_error(function, format!("expected a list, got {other:?}"))),
    }
}

fn string_arg(v: &Value, function: &str) -> Result<Arc<String>, ExecutionError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(ExecutionError::function_error(function, format!("expected a string, got {other:?}"))),
    }
}

/// Kubernetes' lists library (`k8s.io/apiserver/pkg/cel/library/lists.go`).
mod lists {
    use std::cmp::Ordering;

    use super::*;

    fn compare(a: &Value, b: &Value) -> Option<Ordering> {
        match (a, b) {
            (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
            (Value::UInt(x), Value::UInt(y)) => Some(x.cmp(y)),
            (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
            (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
            (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
            _ => None,
        }
    }

    fn the_list(args: &[CowVal<'_, '_>], function: &str) -> Result<Arc<Vec<Value>>, ExecutionError> {
        let vals = values(args)?;
        list_arg(vals.first().unwrap_or(&Value::Null), function)
    }

    fn not_comparable(function: &str) -> ExecutionError {
        ExecutionError::function_error(function, "list elements must be comparable (int, uint, double, string, bool) and of one type")
    }

    pub fn is_sorted<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let l = the_list(&args, "isSorted")?;
        let mut sorted = true;
        for w in l.windows(2) {
            match compare(&w[0], &w[1]) {
                Some(Ordering::Greater) => sorted = false,
                Some(_) => {}
                None => return Err(not_comparable("isSorted")),
            }
        }
        owned(Value::Bool(sorted))
    }

    pub fn sum<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let l = the_list(&args, "sum")?;
        let overflow = || ExecutionError::function_error("sum", "integer overflow");
        let total = match l.first() {
            None => Value::Int(0),
            Some(Value::Int(_)) => Value::Int(l.iter().try_fold(0i64, |acc, v| match v {
                Value::Int(i) => acc.checked_add(*i).ok_or_else(overflow),
                _ => Err(not_comparable("sum")),
            })?),
            Some(Value::UInt(_)) => Value::UInt(l.iter().try_fold(0u64, |acc, v| match v {
                Value::UInt(i) => acc.checked_add(*i).ok_or_else(overflow),
                _ => Err(not_comparable("sum")),
            })?),
            Some(Value::Float(_)) => Value::Float(l.iter().try_fold(0f64, |acc, v| match v {
                Value::Float(f) => Ok(acc + f),
                _ => Err(not_comparable("sum")),
            })?),
            Some(_) => return Err(ExecutionError::function_error("sum", "sum needs a list of int, uint or double")),
        };
        owned(total)
    }

    fn extreme<'b, 'v>(args: Vec<CowVal<'b, 'v>>, function: &str, want: Ordering) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let l = the_list(&args, function)?;
        let mut best: Option<&Value> = None;
        for v in l.iter() {
            best = match best {
                None => Some(v),
                Some(b) => match compare(v, b) {
                    Some(o) if o == want => Some(v),
                    Some(_) => Some(b),
                    None => return Err(not_comparable(function)),
                },
            };
        }
        match best {
            Some(v) => owned(v.clone()),
            None => Err(ExecutionError::function_error(function, format!("{function} called on empty list"))),
        }
    }

    pub fn min<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        extreme(args, "min", Ordering::Less)
    }

    pub fn max<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        extreme(args, "max", Ordering::Greater)
    }

    fn position<'b, 'v>(args: Vec<CowVal<'b, 'v>>, function: &str, last: bool) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let vals = values(&args)?;
        let l = list_arg(vals.first().unwrap_or(&Value::Null), function)?;
        let want = vals.get(1).unwrap_or(&Value::Null);
        let found = if last { l.iter().rposition(|v| v == want) } else { l.iter().position(|v| v == want) };
        owned(Value::Int(found.map_or(-1, |i| i as i64)))
    }

    pub fn index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        position(args, "indexOf", false)
    }

    pub fn last_index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        position(args, "lastIndexOf", true)
    }
}

/// Kubernetes' regex library (`find`, `findAll`).
mod regex_lib {
    use super::*;

    fn parts(args: &[CowVal<'_, '_>], function: &str) -> Result<(Arc<String>, regex::Regex, Option<i64>), ExecutionError> {
        let vals = values(args)?;
        let s = string_arg(vals.first().unwrap_or(&Value::Null), function)?;
        let pattern = string_arg(vals.get(1).unwrap_or(&Value::Null), function)?;
        let re = regex::Regex::new(&pattern).map_err(|e| ExecutionError::function_error(function, e))?;
        let n = match vals.get(2) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        Ok((s, re, n))
    }

    pub fn find<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let (s, re, _) = parts(&args, "find")?;
        owned(Value::String(Arc::new(re.find(&s).map_or(String::new(), |m| m.as_str().to_string()))))
    }

    fn all<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let (s, re, n) = parts(&args, "findAll")?;
        let take = match n {
            Some(n) if n >= 0 => n as usize,
            _ => usize::MAX,
        };
        let found: Vec<Value> = re.find_iter(&s).take(take).map(|m| Value::String(Arc::new(m.as_str().to_string()))).collect();
        owned(Value::List(Arc::new(found)))
    }

    pub fn find_all<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        all(args)
    }

    pub fn find_all_n<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        all(args)
    }
}

/// Kubernetes' URL library: `url(s)` is a map carrying its parts (the crate has no opaque types
/// with methods), read by the `get*` member functions; `isURL(s)` as Go's `url.ParseRequestURI`
/// (an absolute URL, or an absolute path).
mod urls {
    use super::*;

    const MARK: &str = "@url";

    fn parse(s: &str) -> Option<HashMap<String, Value>> {
        let string = |x: &str| Value::String(Arc::new(x.to_string()));
        if s.starts_with('/') {
            let (path, query) = s.split_once('?').unwrap_or((s, ""));
            return Some(HashMap::from([
                (MARK.to_string(), Value::Bool(true)),
                ("scheme".to_string(), string("")),
                ("host".to_string(), string("")),
                ("hostname".to_string(), string("")),
                ("port".to_string(), string("")),
                ("path".to_string(), string(path)),
                ("query".to_string(), Value::from(HashMap::<String, Value>::new())),
                ("rawQuery".to_string(), string(query)),
            ]));
        }
        let u = url::Url::parse(s).ok()?;
        let hostname = u.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']').to_string();
        let port = u.port().map(|p| p.to_string()).unwrap_or_default();
        let host = match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => String::new(),
        };
        let mut query: HashMap<String, Vec<Value>> = HashMap::new();
        for (k, v) in u.query_pairs() {
            query.entry(k.to_string()).or_default().push(string(&v));
        }
        let query: HashMap<String, Value> = query.into_iter().map(|(k, v)| (k, Value::List(Arc::new(v)))).collect();
        Some(HashMap::from([
            (MARK.to_string(), Value::Bool(true)),
            ("scheme".to_string(), string(u.scheme())),
            ("host".to_string(), string(&host)),
            ("hostname".to_string(), string(&hostname)),
            ("port".to_string(), string(&port)),
            ("path".to_string(), string(u.path())),
            ("query".to_string(), Value::from(query)),
        ]))
    }

    pub fn url<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let vals = values(&args)?;
        let s = string_arg(vals.first().unwrap_or(&Value::Null), "url")?;
        match parse(&s) {
            Some(m) => owned(Value::from(m)),
            None => Err(ExecutionError::function_error("url", format!("URL parse error during conversion from string: parse {:?}: invalid URL", s.as_str()))),
        }
    }

    pub fn is_url<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let vals = values(&args)?;
        let s = string_arg(vals.first().unwrap_or(&Value::Null), "isURL")?;
        owned(Value::Bool(parse(&s).is_some()))
    }

    fn part<'b, 'v>(args: Vec<CowVal<'b, 'v>>, key: &str) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let vals = values(&args)?;
        let Some(Value::Map(m)) = vals.first() else { return Err(ExecutionError::function_error(key, "not a URL")) };
        let get = |k: &str| m.map.get(&cel::objects::Key::String(Arc::new(k.to_string()))).cloned();
        if get(MARK).is_none() {
            return Err(ExecutionError::function_error(key, "not a URL"));
        }
        owned(get(key).unwrap_or(Value::Null))
    }

    pub fn get_scheme<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        part(args, "scheme")
    }
    pub fn get_host<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        part(args, "host")
    }
    pub fn get_hostname<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        part(args, "hostname")
    }
    pub fn get_port<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        part(args, "port")
    }
    pub fn get_escaped_path<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        part(args, "path")
    }
    pub fn get_query<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        part(args, "query")
    }
}

/// cel-go's sets extension (`sets.contains`, `sets.equivalent`, `sets.intersects`).
mod sets {
    use super::*;

    fn two(args: &[CowVal<'_, '_>], function: &str) -> Result<(Arc<Vec<Value>>, Arc<Vec<Value>>), ExecutionError> {
        let vals = values(args)?;
        Ok((list_arg(vals.first().unwrap_or(&Value::Null), function)?, list_arg(vals.get(1).unwrap_or(&Value::Null), function)?))
    }

    pub fn contains<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let (a, b) = two(&args, "sets.contains")?;
        owned(Value::Bool(b.iter().all(|x| a.contains(x))))
    }

    pub fn equivalent<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let (a, b) = two(&args, "sets.equivalent")?;
        owned(Value::Bool(b.iter().all(|x| a.contains(x)) && a.iter().all(|x| b.contains(x))))
    }

    pub fn intersects<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let (a, b) = two(&args, "sets.intersects")?;
        owned(Value::Bool(b.iter().any(|x| a.contains(x))))
    }
}

/// Kubernetes' quantity library: `quantity(s)` is a map carrying the exact value in thousandths
/// (the crate has no opaque types with methods), read by the member functions.
mod quantities {
    use super::*;
    use crate::quantity::{Format, Quantity};

    const MARK: &str = "@quantity";

    fn to_value(q: Quantity) -> Value {
        let format = match q.format {
            Format::BinarySI => "BinarySI",
            Format::DecimalSI => "DecimalSI",
            Format::DecimalExponent => "DecimalExponent",
        };
        Value::from(HashMap::from([
            (MARK.to_string(), Value::String(Arc::new(q.to_string()))),
            ("@milli".to_string(), Value::String(Arc::new(q.milli.to_string()))),
            ("@format".to_string(), Value::String(Arc::new(format.to_string()))),
        ]))
    }

    fn of(v: &Value, function: &str) -> Result<Quantity, ExecutionError> {
        let not = || ExecutionError::function_error(function, "not a quantity");
        match v {
            Value::Map(m) => {
                let get = |k: &str| m.map.get(&cel::objects::Key::String(Arc::new(k.to_string())));
                let milli = match get("@milli") {
                    Some(Value::String(s)) => s.parse::<i128>().map_err(|_| not())?,
                    _ => return Err(not()),
                };
                let format = match get("@format") {
                    Some(Value::String(f)) if f.as_str() == "BinarySI" => Format::BinarySI,
                    Some(Value::String(f)) if f.as_str() == "DecimalExponent" => Format::DecimalExponent,
                    _ => Format::DecimalSI,
                };
                Ok(Quantity { milli, format })
            }
            // `add(int)`/`sub(int)` take whole units.
            Value::Int(i) => Ok(Quantity { milli: i128::from(*i) * 1000, format: Format::DecimalSI }),
            _ => Err(not()),
        }
    }

    fn two(args: &[CowVal<'_, '_>], function: &str) -> Result<(Quantity, Quantity), ExecutionError> {
        let vals = values(args)?;
        Ok((of(vals.first().unwrap_or(&Value::Null), function)?, of(vals.get(1).unwrap_or(&Value::Null), function)?))
    }

    fn one(args: &[CowVal<'_, '_>], function: &str) -> Result<Quantity, ExecutionError> {
        let vals = values(args)?;
        of(vals.first().unwrap_or(&Value::Null), function)
    }

    pub fn quantity<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let vals = values(&args)?;
        let s = string_arg(vals.first().unwrap_or(&Value::Null), "quantity")?;
        match Quantity::parse(&s) {
            Some(q) => owned(to_value(q)),
            None => Err(ExecutionError::function_error("quantity", crate::quantity::SYNTAX)),
        }
    }

    pub fn is_quantity<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let vals = values(&args)?;
        let s = string_arg(vals.first().unwrap_or(&Value::Null), "isQuantity")?;
        owned(Value::Bool(Quantity::parse(&s).is_some()))
    }

    pub fn is_less_than<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let (a, b) = two(&args, "isLessThan")?;
        owned(Value::Bool(a.milli < b.milli))
    }

    pub fn is_greater_than<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let (a, b) = two(&args, "isGreaterThan")?;
        owned(Value::Bool(a.milli > b.milli))
    }

    pub fn compare_to<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let (a, b) = two(&args, "compareTo")?;
        owned(Value::Int(a.milli.cmp(&b.milli) as i64))
    }

    pub fn add<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let (a, b) = two(&args, "add")?;
        owned(to_value(a + b))
    }

    pub fn sub<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let (a, b) = two(&args, "sub")?;
        owned(to_value(a + Quantity { milli: -b.milli, format: b.format }))
    }

    pub fn as_integer<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let q = one(&args, "asInteger")?;
        if q.milli % 1000 != 0 {
            return Err(ExecutionError::function_error("asInteger", "cannot convert value to integer"));
        }
        let units = i64::try_from(q.milli / 1000).map_err(|_| ExecutionError::function_error("asInteger", "cannot convert value to integer"))?;
        owned(Value::Int(units))
    }

    pub fn as_approximate_float<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let q = one(&args, "asApproximateFloat")?;
        owned(Value::Float(q.milli as f64 / 1000.0))
    }

    pub fn sign<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let q = one(&args, "sign")?;
        owned(Value::Int(q.milli.signum() as i64))
    }

    pub fn is_integer<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let q = one(&args, "isInteger")?;
        owned(Value::Bool(q.milli % 1000 == 0 && i64::try_from(q.milli / 1000).is_ok()))
    }
}

/// `duration(s)` (Go's duration syntax, `1h30m`, `300ms`) without the crate's chrono types: the
/// value is an `int` of nanoseconds, so durations compare, add and subtract as CEL durations do
/// (but `type()` of one is `int`, and it has no `getSeconds()`-style methods).
mod durations {
    use super::*;

    /// Nanoseconds of a Go duration string, `None` when it is not one.
    pub fn parse(s: &str) -> Option<i64> {
        let (neg, mut rest) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        if rest == "0" {
            return Some(0);
        }
        if rest.is_empty() {
            return None;
        }
        let mut total: f64 = 0.0;
        while !rest.is_empty() {
            let num = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            let value: f64 = rest[..num].parse().ok()?;
            rest = &rest[num..];
            let units: [(&str, f64); 7] = [("ns", 1.0), ("us", 1e3), ("µs", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9)];
            let (unit, scale) = units.iter().filter(|(u, _)| rest.starts_with(u)).max_by_key(|(u, _)| u.len())?;
            rest = &rest[unit.len()..];
            total += value * scale;
        }
        if total > i64::MAX as f64 {
            return None;
        }
        let n = total.round() as i64;
        Some(if neg { -n } else { n })
    }

    pub fn duration<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let vals = values(&args)?;
        let s = string_arg(vals.first().unwrap_or(&Value::Null), "duration")?;
        match parse(&s) {
            Some(n) => owned(Value::Int(n)),
            None => Err(ExecutionError::function_error("duration", format!("invalid duration {:?}", s.as_str()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(src: &str) -> Result<Value, String> {
        run(src, &[("self", value(&serde_json::json!({"l": [3, 1, 2], "s": "a-b-c", "u": "https://example.com:8443/x?a=1"})))])
    }

    #[test]
    fn unknown_functions_and_variables_do_not_compile() {
        let e = compile("self.foo() && x", &["self"]).unwrap_err().0;
        assert_eq!(
            e,
            "ERROR: <input>:1:9: undeclared reference to 'foo' (in container '')\n | self.foo() && x\n | ........^\nERROR: <input>:1:15: undeclared reference to 'x' (in container '')\n | self.foo() && x\n | ..............^"
        );
        assert!(compile("self.l.all(x, x > 0", &["self"]).unwrap_err().0.starts_with("ERROR: <input>:1:"));
        assert!(compile("'héllo wörld' == nope", &["self"]).unwrap_err().0.contains("undeclared reference to 'nope'"));
        assert!(compile("self.l.all(x, x > 0) && self.l.exists(y, y == oldSelf)", &["self", "oldSelf"]).is_ok_and(|p| p.uses("oldSelf")));
        assert!(compile("self.l.all(x, x > 0)", &["self", "oldSelf"]).is_ok_and(|p| !p.uses("oldSelf")));
    }

    #[test]
    fn kubernetes_libraries_evaluate() {
        for (src, want) in [
            ("self.l.sum() == 6 && self.l.min() == 1 && self.l.max() == 3 && !self.l.isSorted() && [1, 2].isSorted()", true),
            ("self.l.indexOf(2) == 2 && self.l.lastIndexOf(9) == -1", true),
            ("self.s.split('-').join('+') == 'a+b+c' && self.s.upperAscii() == 'A-B-C' && self.s.replace('-', '') == 'abc'", true),
            ("self.s.find('[a-z]') == 'a' && self.s.findAll('[a-z]').size() == 3 && self.s.matches('^a-')", true),
            ("isURL(self.u) && url(self.u).getHost() == 'example.com:8443' && url(self.u).getPort() == '8443' && url(self.u).getScheme() == 'https'", true),
            ("!isURL('not a url') && isURL('/path')", true),
            ("sets.contains([1, 2, 3], [2]) && sets.intersects([1], [1, 5]) && !sets.equivalent([1], [2])", true),
            ("self.l.exists_one(x, x == 3) && self.l.map(x, x * 2).filter(x, x > 2).size() == 2", true),
            ("quantity('500m').isLessThan(quantity('1')) && quantity('1Gi').compareTo(quantity('1024Mi')) == 0 && quantity('1').add(quantity('500m')).isGreaterThan(quantity('1'))", true),
            ("isQuantity('10Mi') && !isQuantity('10 apples') && quantity('2k').asInteger() == 2000 && quantity('-1').sign() == -1 && !quantity('1500m').isInteger()", true),
            ("quantity('1').sub(1).sign() == 0 && quantity('1.5').asApproximateFloat() == 1.5", true),
            ("duration('1h') > duration('59m') && duration('1m30s') == duration('90s') && duration('0s') != duration('1ms')", true),
        ] {
            assert_eq!(ev(src), Ok(Value::Bool(want)), "{src}");
        }
    }

    #[test]
    fn cost_is_bounded() {
        let big: Vec<i64> = (0..2000).collect();
        let p = compile("self.all(x, self.all(y, x + y >= 0))", &["self"]).unwrap();
        let vars = [("self", value(&serde_json::json!(big)))];
        let (r, spent) = eval(&p, &vars, PER_CALL_LIMIT);
        assert_eq!(r, Err(EvalError::Cost), "spent {spent}");
        let (r, spent) = eval(&p, &[("self", value(&serde_json::json!([1, 2, 3])))], PER_CALL_LIMIT);
        assert_eq!((r, spent), (Ok(Value::Bool(true)), 1 + 3 + 3 * 3));
    }
}
