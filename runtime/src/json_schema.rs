//! Output constrained to JSON (`response_format`): a JSON Schema subset compiled into a graph of
//! nodes, and an incremental validator that says whether a candidate token's bytes keep the output
//! a prefix of some valid document. The sampler masks every token that does not.
//!
//! Supported: `type` (object, array, string, number, integer, boolean, null, or a list of them),
//! `properties`, `required`, `additionalProperties`, `items`, `enum`, `const`, `anyOf`/`oneOf`
//! (whose branches must start with different characters, e.g. a string or null), `allOf` with one
//! schema, local `$ref`s (`#/$defs/...`, recursion included), `minLength`/`maxLength` on strings
//! (in characters) and `minItems`/`maxItems` on arrays. Annotations (`title`, `description`,
//! `format`, `default`, ...) are accepted and, as JSON Schema has it, not asserted. The other
//! keywords that narrow a value (`pattern`, `minimum`, `multipleOf`, `uniqueItems`, ...) are
//! refused with an error naming them, since the output could not be held to them.
//!
//! An object with `properties` and no `additionalProperties` takes only those keys, so that the
//! model stays on the schema's keys. Every prefix the validator accepts can still be completed:
//! `,` is refused when no key is left to write, `}` while a required key is missing, and runs of
//! whitespace, number lengths and nesting depth are capped so that a model cannot loop forever
//! inside the grammar.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

type NodeId = usize;

/// Any JSON value.
const ANY: NodeId = 0;
/// `true` or `false`.
const BOOL: NodeId = 1;
/// `null`.
const NULL: NodeId = 2;
/// An object with any keys and values.
const ANY_OBJECT: NodeId = 3;
/// An array of any values.
const ANY_ARRAY: NodeId = 4;

/// Whitespace between the tokens of the document is one space, or a newline and at most this
/// many spaces or tabs of indentation (llama.cpp's JSON grammars allow the same), so that a model
/// cannot stall in whitespace when the schema refuses what it would rather write.
const MAX_INDENT: u32 = 20;
/// Bytes of one number; past this it can only end.
const MAX_NUMBER_LEN: u8 = 32;
/// Bytes of an integer: 18 always fit in 64 bits, which is what readers of the JSON expect.
const MAX_INTEGER_LEN: u8 = 18;
/// Digits of an exponent: two keep every number within an f64's range.
const MAX_EXPONENT_DIGITS: u8 = 2;
/// Open objects, arrays and values at once.
const MAX_STACK: usize = 128;
/// Nesting of the schema itself (references are followed lazily and do not count).
const MAX_SCHEMA_DEPTH: usize = 64;
/// Nodes of one compiled schema.
const MAX_NODES: usize = 20_000;

#[derive(Clone, Debug)]
struct Prop {
    /// The key as it appears in the document, quotes included: `"name"`.
    key: Vec<u8>,
    node: NodeId,
    required: bool,
}

#[derive(Clone, Debug)]
enum Node {
    Any,
    /// `additional`: the schema of keys not in `props`; `None` allows no other keys.
    Object {
        props: Vec<Prop>,
        additional: Option<NodeId>,
    },
    Array {
        items: NodeId,
        count: Bounds,
    },
    /// Characters of the string.
    String(Bounds),
    Number {
        integer: bool,
    },
    /// One of these exact texts (enum, const, true/false, null), compact JSON.
    Literals(Vec<Vec<u8>>),
    /// One of these schemas, told apart by the value's first byte.
    Union(Vec<NodeId>),
}

/// `minLength`/`maxLength`, `minItems`/`maxItems`: a count's bounds, both inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bounds {
    min: u32,
    max: u32,
}

impl Bounds {
    const ANY: Bounds = Bounds {
        min: 0,
        max: u32::MAX,
    };
}

/// Keywords that narrow a value beyond what the decoder can enforce: refused by name rather than
/// accepted and ignored.
const UNENFORCED: &[&str] = &[
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "patternProperties",
    "propertyNames",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "contains",
    "minContains",
    "maxContains",
    "prefixItems",
    "unevaluatedItems",
    "unevaluatedProperties",
    "not",
    "if",
    "then",
    "else",
];

/// A compiled schema; shared by the validators of every request that uses it.
#[derive(Debug)]
pub struct Schema {
    nodes: Vec<Node>,
    /// Bytes each node's values can start with.
    starts: Vec<ByteSet>,
    /// Where a document starts: one node, or the branches of a top-level `anyOf`/`oneOf`, which
    /// may overlap (several objects, as a required call to one of several tools is): the
    /// validator follows every branch that still fits.
    roots: Vec<NodeId>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ByteSet([u64; 4]);

impl ByteSet {
    fn of(bytes: &[u8]) -> ByteSet {
        let mut s = ByteSet::default();
        for &b in bytes {
            s.0[(b >> 6) as usize] |= 1 << (b & 63);
        }
        s
    }

    fn contains(&self, b: u8) -> bool {
        self.0[(b >> 6) as usize] & (1 << (b & 63)) != 0
    }

    fn union(self, o: ByteSet) -> ByteSet {
        ByteSet([
            self.0[0] | o.0[0],
            self.0[1] | o.0[1],
            self.0[2] | o.0[2],
            self.0[3] | o.0[3],
        ])
    }

    fn intersects(&self, o: &ByteSet) -> bool {
        self.0.iter().zip(o.0.iter()).any(|(a, b)| a & b != 0)
    }
}

const NUMBER_START: &[u8] = b"-0123456789";

impl Schema {
    /// Any JSON object: `{"type": "json_object"}`.
    pub fn any_object() -> Arc<Schema> {
        let mut c = Compiler::new(&Value::Null);
        c.finish(ANY_OBJECT)
            .expect("the built-in nodes are well formed")
    }

    /// Compiles a JSON Schema; the error names the keyword or value that is not supported.
    pub fn compile(schema: &Value) -> Result<Arc<Schema>, String> {
        let mut c = Compiler::new(schema);
        let root = c.node(schema, 0)?;
        c.finish(root)
    }
}

struct Compiler<'v> {
    root: &'v Value,
    nodes: Vec<Node>,
    refs: HashMap<String, NodeId>,
}

impl<'v> Compiler<'v> {
    fn new(root: &'v Value) -> Self {
        let nodes = vec![
            Node::Any,
            Node::Literals(vec![b"true".to_vec(), b"false".to_vec()]),
            Node::Literals(vec![b"null".to_vec()]),
            Node::Object {
                props: Vec::new(),
                additional: Some(ANY),
            },
            Node::Array {
                items: ANY,
                count: Bounds::ANY,
            },
        ];
        Compiler {
            root,
            nodes,
            refs: HashMap::new(),
        }
    }

    fn push(&mut self, n: Node) -> Result<NodeId, String> {
        if self.nodes.len() >= MAX_NODES {
            return Err(format!(
                "the schema is too large (more than {MAX_NODES} parts)"
            ));
        }
        self.nodes.push(n);
        Ok(self.nodes.len() - 1)
    }

    fn finish(&mut self, root: NodeId) -> Result<Arc<Schema>, String> {
        let top_union = match &self.nodes[root] {
            Node::Union(branches) => Some(branches.clone()),
            _ => None,
        };
        let mut starts = vec![None; self.nodes.len()];
        for id in 0..self.nodes.len() {
            // A top-level union's branches may overlap; one nested anywhere (reached through a
            // reference to the root too) may not.
            if top_union.is_none() || id != root {
                self.starts_of(id, &mut starts, 0)?;
            }
        }
        let starts = starts.into_iter().map(|s| s.unwrap_or_default()).collect();
        Ok(Arc::new(Schema {
            nodes: std::mem::take(&mut self.nodes),
            starts,
            roots: top_union.unwrap_or_else(|| vec![root]),
        }))
    }

    /// The first bytes of a node's values; checks that the branches of a union are disjoint.
    fn starts_of(
        &self,
        id: NodeId,
        memo: &mut Vec<Option<ByteSet>>,
        depth: usize,
    ) -> Result<ByteSet, String> {
        if let Some(s) = memo[id] {
            return Ok(s);
        }
        if depth > MAX_SCHEMA_DEPTH {
            return Err("the schema's anyOf/oneOf refer to themselves".into());
        }
        let s = match &self.nodes[id] {
            Node::Any => ByteSet::of(b"{[\"-0123456789tfn"),
            Node::Object { .. } => ByteSet::of(b"{"),
            Node::Array { .. } => ByteSet::of(b"["),
            Node::String(_) => ByteSet::of(b"\""),
            Node::Number { .. } => ByteSet::of(NUMBER_START),
            Node::Literals(lits) => lits
                .iter()
                .fold(ByteSet::default(), |s, l| s.union(ByteSet::of(&l[..1]))),
            Node::Union(branches) => {
                let mut all = ByteSet::default();
                for &b in branches {
                    let bs = self.starts_of(b, memo, depth + 1)?;
                    if all.intersects(&bs) {
                        return Err("anyOf/oneOf branches (or a list of types) must start differently, \
                                    e.g. an object or null; branches of the same JSON type are not supported"
                            .into());
                    }
                    all = all.union(bs);
                }
                all
            }
        };
        memo[id] = Some(s);
        Ok(s)
    }

    fn node(&mut self, v: &Value, depth: usize) -> Result<NodeId, String> {
        if depth > MAX_SCHEMA_DEPTH {
            return Err(format!(
                "the schema nests deeper than {MAX_SCHEMA_DEPTH} levels"
            ));
        }
        let obj = match v {
            Value::Bool(true) => return Ok(ANY),
            Value::Bool(false) => return Err("the schema `false` matches nothing".into()),
            Value::Object(o) => o,
            other => {
                return Err(format!(
                    "a schema must be an object or a boolean, got {}",
                    short(other)
                ))
            }
        };
        if let Some(keyword) = UNENFORCED.iter().find(|k| match obj.get(**k) {
            // `uniqueItems: false` asks for nothing.
            Some(Value::Bool(false)) => **k != "uniqueItems",
            Some(_) => true,
            None => false,
        }) {
            return Err(format!(
                "`{keyword}` is not supported: the output could not be held to it"
            ));
        }
        if let Some(r) = obj.get("$ref") {
            return self.reference(r);
        }
        if let Some(c) = obj.get("const") {
            return self.push(Node::Literals(vec![literal(c)]));
        }
        if let Some(e) = obj.get("enum") {
            let values = e
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or("`enum` must be a non-empty array")?;
            return self.push(Node::Literals(values.iter().map(literal).collect()));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(list) = obj.get(key) {
                let list = list
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or(format!("`{key}` must be a non-empty array"))?;
                let branches = list
                    .iter()
                    .map(|s| self.node(s, depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                return self.union(branches);
            }
        }
        if let Some(all) = obj.get("allOf") {
            return match all.as_array().map(Vec::as_slice) {
                Some([one]) => self.node(one, depth + 1),
                _ => Err("`allOf` is supported with exactly one schema".into()),
            };
        }
        match obj.get("type") {
            None if obj.contains_key("properties")
                || obj.contains_key("additionalProperties")
                || obj.contains_key("required") =>
            {
                self.typed("object", obj, depth)
            }
            None if obj.contains_key("items") => self.typed("array", obj, depth),
            None => Ok(ANY),
            Some(Value::String(t)) => self.typed(t, obj, depth),
            Some(Value::Array(types)) if !types.is_empty() => {
                let mut branches = Vec::new();
                for t in types {
                    let t = t.as_str().ok_or("`type` lists must hold strings")?;
                    branches.push(self.typed(t, obj, depth)?);
                }
                self.union(branches)
            }
            Some(other) => Err(format!(
                "`type` must be a string or a list of strings, got {}",
                short(other)
            )),
        }
    }

    fn typed(
        &mut self,
        t: &str,
        obj: &serde_json::Map<String, Value>,
        depth: usize,
    ) -> Result<NodeId, String> {
        match t {
            "object" => self.object(obj, depth),
            "array" => {
                let items = match obj.get("items") {
                    Some(s) => self.node(s, depth + 1)?,
                    None => ANY,
                };
                let count = bounds(obj, "minItems", "maxItems")?;
                self.push(Node::Array { items, count })
            }
            "string" => {
                let length = bounds(obj, "minLength", "maxLength")?;
                self.push(Node::String(length))
            }
            "number" => self.push(Node::Number { integer: false }),
            "integer" => self.push(Node::Number { integer: true }),
            "boolean" => Ok(BOOL),
            "null" => Ok(NULL),
            other => Err(format!("unknown type {other:?}")),
        }
    }

    fn object(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        depth: usize,
    ) -> Result<NodeId, String> {
        let required: Vec<&str> = match obj.get("required") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|k| k.as_str().ok_or("`required` must list strings"))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("`required` must be an array of strings".into()),
        };
        let mut props = Vec::new();
        match obj.get("properties") {
            None => {}
            Some(Value::Object(p)) => {
                for (k, s) in p {
                    let node = self.node(s, depth + 1)?;
                    props.push(Prop {
                        key: literal(&Value::String(k.clone())),
                        node,
                        required: required.contains(&k.as_str()),
                    });
                }
            }
            Some(_) => return Err("`properties` must be an object".into()),
        }
        if let Some(missing) = required.iter().find(|k| {
            !props
                .iter()
                .any(|p| p.key == literal(&Value::String(k.to_string())))
        }) {
            return Err(format!(
                "required property {missing:?} is not among the schema's properties"
            ));
        }
        let additional = match obj.get("additionalProperties") {
            Some(Value::Bool(false)) => None,
            Some(Value::Bool(true)) => Some(ANY),
            Some(s @ Value::Object(_)) => Some(self.node(s, depth + 1)?),
            None if props.is_empty() => Some(ANY),
            None => None,
            Some(other) => {
                return Err(format!(
                    "`additionalProperties` must be a boolean or a schema, got {}",
                    short(other)
                ))
            }
        };
        if props.is_empty() && additional.is_none() {
            // Only `{}` is valid.
            return self.push(Node::Literals(vec![b"{}".to_vec()]));
        }
        self.push(Node::Object { props, additional })
    }

    fn union(&mut self, branches: Vec<NodeId>) -> Result<NodeId, String> {
        let mut flat = Vec::new();
        for b in branches {
            match &self.nodes[b] {
                Node::Union(inner) => flat.extend(inner.iter().copied()),
                _ => flat.push(b),
            }
        }
        // `integer` within `number` adds nothing; both at once would not be disjoint.
        let has_number = flat
            .iter()
            .any(|&b| matches!(self.nodes[b], Node::Number { integer: false }));
        if has_number {
            flat.retain(|&b| !matches!(self.nodes[b], Node::Number { integer: true }));
        }
        flat.dedup();
        if flat.len() == 1 {
            return Ok(flat[0]);
        }
        self.push(Node::Union(flat))
    }

    /// A local reference, compiled once: a recursive schema becomes a cycle in the node graph.
    fn reference(&mut self, r: &Value) -> Result<NodeId, String> {
        let r = r.as_str().ok_or("`$ref` must be a string")?;
        if let Some(&id) = self.refs.get(r) {
            return Ok(id);
        }
        let target = resolve_pointer(self.root, r)?;
        let placeholder = self.push(Node::Any)?;
        self.refs.insert(r.to_string(), placeholder);
        let id = self.node(target, 0)?;
        // References made while compiling the target point at the placeholder, which becomes a copy.
        self.nodes[placeholder] = self.nodes[id].clone();
        Ok(placeholder)
    }
}

/// A count's bounds from a pair of keywords (`minLength`/`maxLength`, `minItems`/`maxItems`).
fn bounds(
    obj: &serde_json::Map<String, Value>,
    min_key: &str,
    max_key: &str,
) -> Result<Bounds, String> {
    let read = |key: &str, absent: u32| match obj.get(key) {
        None => Ok(absent),
        Some(v) => v
            .as_u64()
            .map(|n| n.min(u64::from(u32::MAX)) as u32)
            .ok_or(format!(
                "`{key}` must be a non-negative integer, got {}",
                short(v)
            )),
    };
    let b = Bounds {
        min: read(min_key, 0)?,
        max: read(max_key, u32::MAX)?,
    };
    if b.min > b.max {
        return Err(format!(
            "`{min_key}` {} is above `{max_key}` {}",
            b.min, b.max
        ));
    }
    Ok(b)
}

/// `#`, `#/$defs/Name`, `#/definitions/Name`, or any JSON pointer into the schema document.
fn resolve_pointer<'v>(root: &'v Value, r: &str) -> Result<&'v Value, String> {
    let Some(pointer) = r.strip_prefix('#') else {
        return Err(format!(
            "only local $refs (\"#/...\") are supported, got {r:?}"
        ));
    };
    if pointer.is_empty() {
        return Ok(root);
    }
    let mut v = root;
    for part in pointer
        .strip_prefix('/')
        .ok_or(format!("malformed $ref {r:?}"))?
        .split('/')
    {
        let part = part.replace("~1", "/").replace("~0", "~");
        v = match v {
            Value::Object(o) => o.get(&part),
            Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }
        .ok_or(format!("$ref {r:?} points at nothing"))?;
    }
    Ok(v)
}

/// A value as the model must write it: compact JSON.
fn literal(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("a JSON value serializes")
}

/// A value for an error message, cut short.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

#[derive(Clone, Copy, Debug)]
enum ObjSt {
    /// After `{`: whitespace, a key or `}`.
    First,
    /// After `,`: a key.
    Key,
    /// After a key: `:`, then a value of this node.
    Colon(NodeId),
    /// After a value: `,` or `}`.
    Next,
}

#[derive(Clone, Copy, Debug)]
enum ArrSt {
    First,
    Elem,
    Next,
}

#[derive(Clone, Copy, Debug)]
enum StrSt {
    Plain,
    Escape,
    /// Hex digits of a `\u` escape still to come.
    Hex(u8),
    /// A `\u` escape's first digit was `d`: the second must keep it below the surrogates.
    HexAfterD,
    /// Continuation bytes of a UTF-8 character still to come; the next one lies in lo..=hi.
    Utf8 {
        need: u8,
        lo: u8,
        hi: u8,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NumSt {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpInt,
}

impl NumSt {
    fn can_end(self) -> bool {
        matches!(self, NumSt::Zero | NumSt::Int | NumSt::Frac | NumSt::ExpInt)
    }
}

#[derive(Clone, Debug)]
enum Frame {
    /// Below the top-level value: only whitespace once it is complete.
    Root,
    /// A value of this node is expected.
    Value(NodeId),
    Object {
        node: NodeId,
        seen: Vec<bool>,
        st: ObjSt,
    },
    Array {
        items: NodeId,
        st: ArrSt,
        /// Elements so far, within `bounds`.
        count: u32,
        bounds: Bounds,
    },
    /// A string; `key` is the text so far when it is a key whose schema depends on it.
    Str {
        is_key: bool,
        key: Option<Vec<u8>>,
        st: StrSt,
        /// Characters so far, within `length`.
        chars: u32,
        length: Bounds,
    },
    Num {
        integer: bool,
        st: NumSt,
        len: u8,
        exp_digits: u8,
    },
    /// One of the literals of a `Literals` node; `alive` are those that match so far.
    Lit {
        node: NodeId,
        alive: Vec<u32>,
        pos: usize,
    },
    /// A key of a closed object, among its unseen properties.
    Key {
        node: NodeId,
        alive: Vec<u32>,
        pos: usize,
    },
}

/// Where the output stands in the document: cloned to try a candidate token. One cursor per
/// top-level branch the output still fits.
#[derive(Clone, Debug)]
pub struct JsonState {
    cursors: Vec<Cursor>,
}

impl JsonState {
    pub fn new(schema: Arc<Schema>) -> JsonState {
        JsonState {
            cursors: schema
                .roots
                .iter()
                .map(|&root| Cursor::new(Arc::clone(&schema), root))
                .collect(),
        }
    }

    /// Whether appending `bytes` keeps the output a viable prefix.
    pub fn allows(&self, bytes: &[u8]) -> bool {
        self.cursors.iter().any(|c| c.allows(bytes))
    }

    /// Appends `bytes`; false (leaving the state unusable) if they break the document.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        self.cursors.retain_mut(|c| c.feed(bytes));
        !self.cursors.is_empty()
    }

    /// The top-level value is complete: nothing but whitespace may follow.
    pub fn is_complete(&self) -> bool {
        self.cursors.iter().any(Cursor::is_complete)
    }

    /// The output may end here (complete, or a top-level number or literal that can end).
    pub fn can_end(&self) -> bool {
        self.cursors.iter().any(Cursor::can_end)
    }
}

/// The position in the document along one top-level branch of the schema.
#[derive(Clone, Debug)]
struct Cursor {
    schema: Arc<Schema>,
    stack: Vec<Frame>,
    /// Whitespace bytes since the last token, and whether they include the newline.
    whitespace: u32,
    newline: bool,
}

enum Step {
    Consumed,
    Rejected,
    /// The top frame ended before this byte: pop it and give the byte to its parent.
    EndedBefore,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl Cursor {
    fn new(schema: Arc<Schema>, root: NodeId) -> Cursor {
        Cursor {
            schema,
            stack: vec![Frame::Root, Frame::Value(root)],
            whitespace: 0,
            newline: false,
        }
    }

    fn allows(&self, bytes: &[u8]) -> bool {
        !bytes.is_empty() && self.clone().feed(bytes)
    }

    fn feed(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.feed_byte(b))
    }

    fn is_complete(&self) -> bool {
        self.stack.len() == 1
    }

    fn can_end(&self) -> bool {
        match self.stack.as_slice() {
            [Frame::Root] => true,
            [Frame::Root, Frame::Num { st, .. }] => st.can_end(),
            [Frame::Root, Frame::Lit { node, alive, pos }] => {
                let Node::Literals(lits) = &self.schema.nodes[*node] else {
                    return false;
                };
                alive.iter().any(|&i| lits[i as usize].len() == *pos)
            }
            _ => false,
        }
    }

    fn whitespace(&mut self, b: u8) -> bool {
        let ok = match b {
            b' ' => self.whitespace == 0 || (self.newline && self.whitespace <= MAX_INDENT),
            b'\t' => self.newline && self.whitespace <= MAX_INDENT,
            b'\n' => self.whitespace == 0,
            _ => false,
        };
        self.newline |= b == b'\n';
        self.whitespace += 1;
        ok
    }

    fn feed_byte(&mut self, b: u8) -> bool {
        if !is_ws(b) {
            self.whitespace = 0;
            self.newline = false;
        }
        loop {
            let step = self.step(b);
            match step {
                Step::Consumed => return true,
                Step::Rejected => return false,
                Step::EndedBefore => {
                    self.stack.pop();
                }
            }
        }
    }

    fn step(&mut self, b: u8) -> Step {
        let schema = Arc::clone(&self.schema);
        let nodes = &schema.nodes;
        let depth = self.stack.len();
        let Some(top) = self.stack.last_mut() else {
            return Step::Rejected;
        };
        let ok = |c: bool| if c { Step::Consumed } else { Step::Rejected };
        match top {
            Frame::Root => ok(self.whitespace(b)),
            Frame::Value(node) => {
                if is_ws(b) {
                    return ok(self.whitespace(b));
                }
                let node = *node;
                self.stack.pop();
                ok(self.start_value(node, b, depth))
            }
            Frame::Object { node, seen, st } => {
                let Node::Object { props, additional } = &nodes[*node] else {
                    return Step::Rejected;
                };
                let done = props
                    .iter()
                    .zip(seen.iter())
                    .all(|(p, &s)| s || !p.required);
                match *st {
                    // After a value that cannot close the object, only `,` can follow: whitespace
                    // there would only let a model that wants to close stall.
                    ObjSt::Next if is_ws(b) && !done => Step::Rejected,
                    ObjSt::First | ObjSt::Next | ObjSt::Key | ObjSt::Colon(_) if is_ws(b) => {
                        ok(self.whitespace(b))
                    }
                    ObjSt::First | ObjSt::Next if b == b'}' => {
                        if done {
                            self.stack.pop();
                        }
                        ok(done)
                    }
                    ObjSt::Next if b == b',' => {
                        let more = additional.is_some() || seen.iter().any(|&s| !s);
                        if more {
                            *st = ObjSt::Key;
                        }
                        ok(more)
                    }
                    ObjSt::First | ObjSt::Key if b == b'"' => {
                        let frame = if additional.is_none() {
                            let alive: Vec<u32> = (0..props.len() as u32)
                                .filter(|&i| !seen[i as usize])
                                .collect();
                            if alive.is_empty() {
                                return Step::Rejected;
                            }
                            Frame::Key {
                                node: *node,
                                alive,
                                pos: 1,
                            }
                        } else {
                            let key = (!props.is_empty()).then(Vec::new);
                            Frame::Str {
                                is_key: true,
                                key,
                                st: StrSt::Plain,
                                chars: 0,
                                length: Bounds::ANY,
                            }
                        };
                        self.stack.push(frame);
                        Step::Consumed
                    }
                    ObjSt::Colon(value) if b == b':' => {
                        *st = ObjSt::Next;
                        self.stack.push(Frame::Value(value));
                        Step::Consumed
                    }
                    _ => Step::Rejected,
                }
            }
            Frame::Array {
                items,
                st,
                count,
                bounds,
            } => match *st {
                _ if is_ws(b) => ok(self.whitespace(b)),
                ArrSt::First | ArrSt::Next if b == b']' => {
                    if *count < bounds.min {
                        return Step::Rejected;
                    }
                    self.stack.pop();
                    Step::Consumed
                }
                ArrSt::First | ArrSt::Elem => {
                    if *count >= bounds.max {
                        return Step::Rejected;
                    }
                    let items = *items;
                    *st = ArrSt::Next;
                    *count += 1;
                    ok(self.start_value(items, b, depth + 1))
                }
                ArrSt::Next if b == b',' && *count < bounds.max => {
                    *st = ArrSt::Elem;
                    Step::Consumed
                }
                ArrSt::Next => Step::Rejected,
            },
            Frame::Str {
                is_key,
                key,
                st,
                chars,
                length,
            } => {
                // A character starts with a plain byte, a backslash or a UTF-8 lead byte.
                let starts_char = matches!(*st, StrSt::Plain) && b != b'"';
                if starts_char && *chars >= length.max {
                    return Step::Rejected;
                }
                let next = match (*st, b) {
                    (StrSt::Plain, b'"') => {
                        if *chars < length.min {
                            return Step::Rejected;
                        }
                        let (is_key, key) = (*is_key, key.take());
                        self.stack.pop();
                        return ok(!is_key || self.key_done(key.as_deref()));
                    }
                    (StrSt::Plain, b'\\') => StrSt::Escape,
                    (StrSt::Plain, 0..=0x1f) => return Step::Rejected,
                    (StrSt::Plain, 0x20..=0x7f) => StrSt::Plain,
                    (StrSt::Plain, 0xc2..=0xdf) => StrSt::Utf8 {
                        need: 1,
                        lo: 0x80,
                        hi: 0xbf,
                    },
                    (StrSt::Plain, 0xe0) => StrSt::Utf8 {
                        need: 2,
                        lo: 0xa0,
                        hi: 0xbf,
                    },
                    (StrSt::Plain, 0xed) => StrSt::Utf8 {
                        need: 2,
                        lo: 0x80,
                        hi: 0x9f,
                    },
                    (StrSt::Plain, 0xe1..=0xef) => StrSt::Utf8 {
                        need: 2,
                        lo: 0x80,
                        hi: 0xbf,
                    },
                    (StrSt::Plain, 0xf0) => StrSt::Utf8 {
                        need: 3,
                        lo: 0x90,
                        hi: 0xbf,
                    },
                    (StrSt::Plain, 0xf1..=0xf3) => StrSt::Utf8 {
                        need: 3,
                        lo: 0x80,
                        hi: 0xbf,
                    },
                    (StrSt::Plain, 0xf4) => StrSt::Utf8 {
                        need: 3,
                        lo: 0x80,
                        hi: 0x8f,
                    },
                    (StrSt::Plain, _) => return Step::Rejected,
                    (StrSt::Escape, b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                        StrSt::Plain
                    }
                    (StrSt::Escape, b'u') => StrSt::Hex(4),
                    (StrSt::Escape, _) => return Step::Rejected,
                    // \uD800 to \uDFFF are UTF-16 surrogates, which strict readers refuse
                    // unpaired: characters beyond the BMP are written as UTF-8 instead.
                    (StrSt::Hex(4), b'd' | b'D') => StrSt::HexAfterD,
                    (StrSt::HexAfterD, b'0'..=b'7') => StrSt::Hex(2),
                    (StrSt::HexAfterD, _) => return Step::Rejected,
                    (StrSt::Hex(n), h) if h.is_ascii_hexdigit() => {
                        if n == 1 {
                            StrSt::Plain
                        } else {
                            StrSt::Hex(n - 1)
                        }
                    }
                    (StrSt::Hex(_), _) => return Step::Rejected,
                    (StrSt::Utf8 { need, lo, hi }, c) if (lo..=hi).contains(&c) => {
                        if need == 1 {
                            StrSt::Plain
                        } else {
                            StrSt::Utf8 {
                                need: need - 1,
                                lo: 0x80,
                                hi: 0xbf,
                            }
                        }
                    }
                    (StrSt::Utf8 { .. }, _) => return Step::Rejected,
                };
                *st = next;
                if starts_char {
                    *chars += 1;
                }
                if let Some(k) = key {
                    k.push(b);
                }
                Step::Consumed
            }
            Frame::Num {
                integer,
                st,
                len,
                exp_digits,
            } => {
                let digit = b.is_ascii_digit();
                let next = match (*st, b) {
                    (NumSt::Minus, b'0') => Some(NumSt::Zero),
                    (NumSt::Minus, _) if digit => Some(NumSt::Int),
                    (NumSt::Zero | NumSt::Int, b'.') if !*integer => Some(NumSt::Dot),
                    (NumSt::Zero | NumSt::Int | NumSt::Frac, b'e' | b'E') if !*integer => {
                        Some(NumSt::Exp)
                    }
                    (NumSt::Int, _) if digit => Some(NumSt::Int),
                    (NumSt::Dot | NumSt::Frac, _) if digit => Some(NumSt::Frac),
                    (NumSt::Exp, b'+' | b'-') => Some(NumSt::ExpSign),
                    (NumSt::Exp | NumSt::ExpSign | NumSt::ExpInt, _)
                        if digit && *exp_digits < MAX_EXPONENT_DIGITS =>
                    {
                        *exp_digits += 1;
                        Some(NumSt::ExpInt)
                    }
                    _ => None,
                };
                let can_end = st.can_end();
                let max_len = if *integer {
                    MAX_INTEGER_LEN
                } else {
                    MAX_NUMBER_LEN
                };
                match next {
                    Some(s) if !(can_end && *len >= max_len) => {
                        *st = s;
                        *len += 1;
                        Step::Consumed
                    }
                    _ if can_end => Step::EndedBefore,
                    _ => Step::Rejected,
                }
            }
            Frame::Lit { node, alive, pos } => {
                let Node::Literals(lits) = &nodes[*node] else {
                    return Step::Rejected;
                };
                let p = *pos;
                let next: Vec<u32> = alive
                    .iter()
                    .copied()
                    .filter(|&i| lits[i as usize].get(p) == Some(&b))
                    .collect();
                if next.is_empty() {
                    let complete = alive.iter().any(|&i| lits[i as usize].len() == p);
                    return if complete {
                        Step::EndedBefore
                    } else {
                        Step::Rejected
                    };
                }
                let all_done = next.iter().all(|&i| lits[i as usize].len() == p + 1);
                *alive = next;
                *pos = p + 1;
                if all_done {
                    self.stack.pop();
                }
                Step::Consumed
            }
            Frame::Key { node, alive, pos } => {
                let Node::Object { props, .. } = &nodes[*node] else {
                    return Step::Rejected;
                };
                let p = *pos;
                alive.retain(|&i| props[i as usize].key.get(p) == Some(&b));
                *pos = p + 1;
                let Some(&first) = alive.first() else {
                    return Step::Rejected;
                };
                // Keys end with their closing quote, so no key is a prefix of another: a complete
                // one is the only one left.
                if props[first as usize].key.len() == p + 1 {
                    let prop = &props[first as usize];
                    self.stack.pop();
                    if let Some(Frame::Object { seen, st, .. }) = self.stack.last_mut() {
                        seen[first as usize] = true;
                        *st = ObjSt::Colon(prop.node);
                    }
                }
                Step::Consumed
            }
        }
    }

    /// A key of an object with additional properties is complete: pick the value's schema.
    fn key_done(&mut self, key: Option<&[u8]>) -> bool {
        let schema = Arc::clone(&self.schema);
        let Some(Frame::Object { node, seen, st }) = self.stack.last_mut() else {
            return false;
        };
        let Node::Object { props, additional } = &schema.nodes[*node] else {
            return false;
        };
        let found = key.and_then(|k| {
            props
                .iter()
                .position(|p| p.key.len() == k.len() + 2 && &p.key[1..p.key.len() - 1] == k)
        });
        let value = match found {
            Some(i) if seen[i] => return false,
            Some(i) => {
                seen[i] = true;
                props[i].node
            }
            None => match additional {
                Some(a) => *a,
                None => return false,
            },
        };
        *st = ObjSt::Colon(value);
        true
    }

    /// The first byte of a value of `node`; `depth` is the stack depth it would open at.
    fn start_value(&mut self, node: NodeId, b: u8, depth: usize) -> bool {
        let schema = Arc::clone(&self.schema);
        if !schema.starts[node].contains(b) {
            return false;
        }
        let frame = match &schema.nodes[node] {
            Node::Any => {
                let concrete = match b {
                    b'{' => ANY_OBJECT,
                    b'[' => ANY_ARRAY,
                    b't' | b'f' => BOOL,
                    b'n' => NULL,
                    b'"' => {
                        return self.push(
                            Frame::Str {
                                is_key: false,
                                key: None,
                                st: StrSt::Plain,
                                chars: 0,
                                length: Bounds::ANY,
                            },
                            depth,
                        )
                    }
                    _ => return self.start_number(false, b, depth),
                };
                return self.start_value(concrete, b, depth);
            }
            Node::Object { props, .. } => Frame::Object {
                node,
                seen: vec![false; props.len()],
                st: ObjSt::First,
            },
            Node::Array { items, count } => Frame::Array {
                items: *items,
                st: ArrSt::First,
                count: 0,
                bounds: *count,
            },
            Node::String(length) => Frame::Str {
                is_key: false,
                key: None,
                st: StrSt::Plain,
                chars: 0,
                length: *length,
            },
            Node::Number { integer } => return self.start_number(*integer, b, depth),
            Node::Literals(lits) => {
                let alive: Vec<u32> = (0..lits.len() as u32)
                    .filter(|&i| lits[i as usize][0] == b)
                    .collect();
                let all_done = alive.iter().all(|&i| lits[i as usize].len() == 1);
                if all_done {
                    // A one-byte literal (a single digit in an enum) is complete at once.
                    return true;
                }
                Frame::Lit {
                    node,
                    alive,
                    pos: 1,
                }
            }
            Node::Union(branches) => {
                let Some(&branch) = branches.iter().find(|&&br| schema.starts[br].contains(b))
                else {
                    return false;
                };
                return self.start_value(branch, b, depth);
            }
        };
        self.push(frame, depth)
    }

    fn start_number(&mut self, integer: bool, b: u8, depth: usize) -> bool {
        let st = match b {
            b'-' => NumSt::Minus,
            b'0' => NumSt::Zero,
            b'1'..=b'9' => NumSt::Int,
            _ => return false,
        };
        self.push(
            Frame::Num {
                integer,
                st,
                len: 1,
                exp_digits: 0,
            },
            depth,
        )
    }

    fn push(&mut self, f: Frame, depth: usize) -> bool {
        if depth >= MAX_STACK {
            return false;
        }
        self.stack.push(f);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn accepts(schema: &Arc<Schema>, text: &str) -> bool {
        let mut s = JsonState::new(Arc::clone(schema));
        s.feed(text.as_bytes()) && s.can_end()
    }

    fn prefix_ok(schema: &Arc<Schema>, text: &str) -> bool {
        JsonState::new(Arc::clone(schema)).feed(text.as_bytes())
    }

    #[test]
    fn any_object_takes_json_objects_only() {
        let s = Schema::any_object();
        for ok in [
            r#"{}"#,
            r#"{"a": [1, -2.5e+3, true, null, {"b": "\u00e9\n"}]}"#,
            "{ \"k\" : \"é😀\" }",
        ] {
            assert!(accepts(&s, ok), "{ok}");
        }
        for bad in [
            "[]",
            "1",
            r#"{"a" 1}"#,
            r#"{"a":01}"#,
            r#"{"a":tru}"#,
            r#"{"a":"x"#,
            "{,}",
            r#"{"a":1,}"#,
            "{\"\x01\":1}",
        ] {
            assert!(!accepts(&s, bad), "{bad}");
        }
        // Invalid UTF-8 inside strings (an overlong encoding, a lone continuation byte).
        let mut st = JsonState::new(Arc::clone(&s));
        assert!(!st.feed(b"{\"\xc0\x80\""));
        assert!(!JsonState::new(Arc::clone(&s)).feed(b"{\"\x80\""));
        assert!(JsonState::new(s).feed("{\"é".as_bytes()));
    }

    #[test]
    fn schema_keys_required_and_types_are_enforced() {
        let s = Schema::compile(&json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer"},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}},
                "pet": {"anyOf": [{"type": "string"}, {"type": "null"}]}
            },
            "required": ["name", "age"]
        }))
        .unwrap();
        assert!(accepts(&s, r#"{"name": "x", "age": 3}"#));
        assert!(accepts(
            &s,
            r#"{"age":3,"name":"x","tags":["a","b"],"pet":null}"#
        ));
        assert!(!accepts(&s, r#"{"name": "x"}"#), "age is required");
        assert!(
            !prefix_ok(&s, r#"{"name": "x"}"#),
            "a closing brace is refused while a required key is missing"
        );
        assert!(
            !prefix_ok(&s, "{\"name\": \"x\"\n"),
            "so is whitespace, where only a comma can follow"
        );
        assert!(prefix_ok(&s, "{\"name\": \"x\",\n  \"age\": 1\n"));
        assert!(!prefix_ok(&s, r#"{"nam": "#), "unknown key");
        assert!(!prefix_ok(&s, r#"{"other"#));
        assert!(!prefix_ok(&s, r#"{"age": 3.5"#), "integer");
        assert!(!prefix_ok(&s, r#"{"age": "3""#));
        assert!(!prefix_ok(&s, r#"{"tags": ["c"#));
        assert!(
            !prefix_ok(&s, r#"{"name": "x", "name""#),
            "no duplicate keys"
        );
        assert!(!prefix_ok(&s, r#"{"pet": 1"#));
        // Once every key is written, a comma would lead nowhere.
        assert!(!prefix_ok(
            &s,
            r#"{"name":"x","age":1,"tags":[],"pet":"y","#
        ));
    }

    #[test]
    fn refs_const_enum_and_open_objects() {
        let s = Schema::compile(&json!({
            "$defs": {"node": {"type": "object", "properties": {"v": {"const": 1}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}, "required": ["v"]}},
            "$ref": "#/$defs/node"
        }))
        .unwrap();
        assert!(accepts(&s, r#"{"v":1,"kids":[{"v":1},{"v":1,"kids":[]}]}"#));
        assert!(!prefix_ok(&s, r#"{"v":2"#));
        let e = Schema::compile(&json!({"enum": [1, 10, "x"]})).unwrap();
        assert!(accepts(&e, "1") && accepts(&e, "10") && accepts(&e, "\"x\""));
        assert!(!prefix_ok(&e, "2") && !prefix_ok(&e, "100"));
        let open = Schema::compile(&json!({"type": "object", "properties": {"a": {"type": "number"}}, "additionalProperties": {"type": "boolean"}})).unwrap();
        assert!(accepts(&open, r#"{"a": 1.5, "zz": true}"#));
        assert!(!prefix_ok(&open, r#"{"zz": 1"#));
        assert!(!prefix_ok(&open, r#"{"a": true"#));
        let top = Schema::compile(&json!({"type": ["number", "null"]})).unwrap();
        assert!(accepts(&top, "-0.5e7") && accepts(&top, "null") && !accepts(&top, "-"));
    }

    #[test]
    fn whitespace_is_one_space_or_a_newline_and_indentation() {
        let s = Schema::any_object();
        assert!(accepts(&s, "{\n  \"a\": [1, 2],\n\t\"b\" : {}\n}"));
        assert!(!prefix_ok(&s, "{  "), "two spaces without a newline");
        assert!(!prefix_ok(&s, "{\n\n"), "two newlines");
        assert!(
            !prefix_ok(&s, &format!("{{\n{}", " ".repeat(21))),
            "indentation past 20"
        );
        assert!(
            accepts(&s, "{\"a\":\"    \"}"),
            "spaces in strings are not whitespace"
        );
    }

    #[test]
    fn unsupported_schemas_are_named() {
        for (schema, word) in [
            (json!({"$ref": "http://x/y"}), "local"),
            (
                json!({"type": "array", "items": {"anyOf": [{"type": "string"}, {"enum": ["a"]}]}}),
                "start differently",
            ),
            (
                json!({"type": "object", "required": ["x"], "properties": {}}),
                "\"x\"",
            ),
            (json!({"type": "date"}), "unknown type"),
            (json!({"allOf": [{}, {}]}), "allOf"),
            (json!(false), "matches nothing"),
            (json!({"type": "string", "pattern": "^a+$"}), "`pattern`"),
            (
                json!({"properties": {"age": {"type": "integer", "minimum": 0}}}),
                "`minimum`",
            ),
            (
                json!({"type": "array", "uniqueItems": true}),
                "`uniqueItems`",
            ),
            (
                json!({"type": "string", "minLength": 3, "maxLength": 2}),
                "`minLength` 3 is above `maxLength` 2",
            ),
            (json!({"type": "string", "maxLength": -1}), "`maxLength`"),
        ] {
            let e = Schema::compile(&schema).unwrap_err();
            assert!(e.contains(word), "{schema}: {e}");
        }
    }

    /// At the top, the branches of `anyOf` may overlap (a call to one of several tools): each
    /// is followed while the output fits it.
    #[test]
    fn top_level_branches_of_one_type_are_followed_together() {
        let schema = Schema::compile(&json!({"anyOf": [
            {"type": "object", "properties": {"name": {"const": "a"}, "x": {"type": "integer"}},
             "required": ["name", "x"], "additionalProperties": false},
            {"type": "object", "properties": {"name": {"const": "b"}, "y": {"type": "string"}},
             "required": ["name", "y"], "additionalProperties": false},
        ]}))
        .unwrap();
        let accepts = |doc: &str| {
            let mut st = JsonState::new(Arc::clone(&schema));
            st.feed(doc.as_bytes()) && st.is_complete()
        };
        assert!(accepts(r#"{"name": "a", "x": 1}"#));
        assert!(accepts(r#"{"name": "b", "y": "z"}"#));
        assert!(!accepts(r#"{"name": "a", "y": "z"}"#));
        assert!(!accepts(r#"{"name": "b", "x": 1}"#));
        let st = JsonState::new(Arc::clone(&schema));
        assert!(st.allows(b"{\"name\": \"") && !st.allows(b"{\"name\": \"c"));
    }

    #[test]
    fn string_lengths_count_characters_and_array_lengths_count_items() {
        let state = |schema: Value| JsonState::new(Schema::compile(&schema).unwrap());
        let accepts = |schema: Value, doc: &str| {
            let mut st = state(schema);
            st.feed(doc.as_bytes()) && st.is_complete()
        };
        let name = json!({"type": "string", "minLength": 2, "maxLength": 3});
        // Escapes and multi-byte characters are one character each.
        for ok in [r#""ab""#, r#""a\n""#, r#""é\u00e9ü""#] {
            assert!(accepts(name.clone(), ok), "{ok}");
        }
        for bad in [r#""a""#, r#""abcd""#, r#""""#, r#""ééé!""#] {
            assert!(!accepts(name.clone(), bad), "{bad}");
        }
        let list =
            json!({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2});
        assert!(accepts(list.clone(), "[1]") && accepts(list.clone(), "[1, 2]"));
        assert!(!accepts(list.clone(), "[]") && !accepts(list.clone(), "[1,2,3]"));
        // At the limit only the end may come.
        let mut st = state(list);
        assert!(st.feed(b"[1,2"));
        assert!(!st.allows(b",") && st.allows(b"]"));
        // Unpaired UTF-16 surrogates, which strict readers refuse, are never written.
        assert!(!accepts(json!({"type": "string"}), r#""\ud83d\ude00""#));
        assert!(accepts(json!({"type": "string"}), r#""\u00e9\uD7FF""#));
        // `format` is an annotation, accepted and not asserted, as JSON Schema has it.
        assert!(accepts(
            json!({"type": "string", "format": "date-time"}),
            r#""x""#
        ));
    }

    /// A tiny deterministic generator (xorshift) for the random walks below.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Random walks through the grammar: from every prefix the validator accepts, some byte is
    /// always allowed (no dead ends), and a walk that steers towards closing ends in a document
    /// that serde_json parses and that matches the schema's shape.
    #[test]
    fn random_walks_never_dead_end_and_end_valid() {
        let schema_json = json!({
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "ok": {"type": "boolean"},
                "name": {"type": "string", "minLength": 2, "maxLength": 5},
                "list": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 3},
                "kind": {"enum": ["x", "yz"]}
            },
            "required": ["id", "kind"]
        });
        let schema = Schema::compile(&schema_json).unwrap();
        let alphabet: Vec<u8> =
            b" \n{}[],:\"-0123456789.eE+truefalsnidokamelistkindxyz\\u".to_vec();
        let mut rng = Rng(0x9e3779b97f4a7c15);
        for walk in 0..300 {
            let mut st = JsonState::new(Arc::clone(&schema));
            let mut out = Vec::new();
            let mut steps = 0;
            while !st.is_complete() {
                let allowed: Vec<u8> = alphabet
                    .iter()
                    .copied()
                    .filter(|&b| st.allows(&[b]))
                    .collect();
                assert!(
                    !allowed.is_empty(),
                    "walk {walk}: dead end after {:?}",
                    String::from_utf8_lossy(&out)
                );
                // Later in the walk, prefer bytes that close things so that it terminates.
                let closing: Vec<u8> = allowed
                    .iter()
                    .copied()
                    .filter(|b| b"}]\"".contains(b))
                    .collect();
                let pool = if steps > 60 && !closing.is_empty() {
                    &closing
                } else {
                    &allowed
                };
                let b = pool[(rng.next() % pool.len() as u64) as usize];
                assert!(st.feed(&[b]));
                out.push(b);
                steps += 1;
                assert!(
                    steps < 5000,
                    "walk {walk} does not terminate: {:?}",
                    String::from_utf8_lossy(&out)
                );
            }
            let v: Value = serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
            let o = v.as_object().expect("an object");
            // serde_json reads `-0` as a float; JSON Schema counts it as an integer.
            assert!(
                o["id"].is_i64() || o["id"].is_u64() || o["id"].as_f64() == Some(0.0),
                "{v}"
            );
            assert!(o["kind"] == "x" || o["kind"] == "yz", "{v}");
            if let Some(name) = o.get("name") {
                let n = name.as_str().expect("a string").chars().count();
                assert!((2..=5).contains(&n), "{v}");
            }
            if let Some(list) = o.get("list") {
                let n = list.as_array().expect("an array").len();
                assert!((1..=3).contains(&n), "{v}");
            }
            for k in o.keys() {
                assert!(
                    ["id", "ok", "name", "list", "kind"].contains(&k.as_str()),
                    "{v}"
                );
            }
        }
    }
}
