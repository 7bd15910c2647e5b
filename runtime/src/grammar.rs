//! GBNF grammars (llama.cpp's `--grammar`, `--grammar-file` and the server's `grammar` field):
//! the text parsed into rules, and an incremental recognizer that says whether a candidate
//! token's bytes keep the output a prefix of some sentence of the grammar. The sampler masks
//! every token that does not, as it does for JSON schemas.
//!
//! The syntax is llama.cpp's (`grammars/README.md` there): `name ::= alternatives`, one rule per
//! line (a parenthesized group may span lines), `"literals"` and `[character classes]` with
//! `\x`, `\u`, `\U`, `\t`, `\r`, `\n` escapes, `[^...]` negation, `.` any character, `( )`
//! groups, `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}` repetition, `#` comments; `root` is where a
//! sentence starts. Token references (`<[1234]>`, `<think>`, `!<...>`) are refused by name.
//!
//! Matching follows llama.cpp's design, a set of stacks: each stack is one way the text so far
//! can be parsed, its top the next element to match; a rule reference on top is replaced by each
//! of the rule's alternatives (the reference's successor kept beneath), so that every stack's
//! top is a character class or the stack is empty (the sentence may end). Repetitions become
//! right-recursive helper rules, whose calls are in tail position and so do not deepen a stack.
//! Left recursion would expand forever and is refused when the grammar is parsed.

use std::collections::HashMap;
use std::sync::Arc;

/// Rules of one grammar, helpers for groups and repetitions included.
const MAX_RULES: usize = 10_000;
/// Elements of all rules together.
const MAX_ELEMENTS: usize = 200_000;
/// `{m,n}`'s counts, as llama.cpp's `MAX_REPETITION_THRESHOLD`.
const MAX_REPETITIONS: u64 = 2000;
/// Parses followed at once: an ambiguous grammar keeps the first ones.
const MAX_STACKS: usize = 4096;
/// Nesting of one parse (rule references not in tail position): deeper parses are dropped.
const MAX_DEPTH: usize = 4096;

/// A set of characters: code points in any of `ranges` (inclusive), or, when `negated`, in none.
/// `.` is the negated empty set.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CharSet {
    ranges: Vec<(u32, u32)>,
    negated: bool,
}

impl CharSet {
    fn contains(&self, c: u32) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }

    /// Whether some code point in `lo..=hi` may be in the set (exact for plain sets; a negated
    /// set answers no only when one of its ranges covers the span).
    fn may_meet(&self, lo: u32, hi: u32) -> bool {
        if self.negated {
            !self.ranges.iter().any(|&(a, b)| a <= lo && hi <= b)
        } else {
            self.ranges.iter().any(|&(a, b)| a <= hi && lo <= b)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Element {
    Chars(CharSet),
    /// A reference to the rule with this index.
    Rule(u32),
}

/// One alternative of a rule: a sequence of elements (empty: the rule may match nothing).
type Sequence = Vec<Element>;

/// A parsed grammar; shared by the recognizers of every request that uses it.
#[derive(Debug)]
pub struct Grammar {
    /// Each rule's alternatives.
    rules: Vec<Vec<Sequence>>,
    /// Each rule's name, helpers' names derived from the rule they serve (for messages).
    names: Vec<String>,
    root: u32,
}

/// The next element to match: alternative `alt` of rule `rule`, element `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Position {
    rule: u32,
    alt: u32,
    index: u32,
}

/// One parse: the top (last) is the next element to match; empty when the sentence is complete.
type Stack = Vec<Position>;

impl Grammar {
    /// Parses GBNF text. Errors name the line and column, or the rule, that is wrong.
    pub fn parse(text: &str) -> Result<Arc<Grammar>, String> {
        let mut parser = Parser {
            src: text,
            pos: 0,
            ids: HashMap::new(),
            names: Vec::new(),
            rules: Vec::new(),
            elements: 0,
        };
        parser.skip_space(true);
        while parser.pos < text.len() {
            parser.rule()?;
        }
        let Parser {
            ids, names, rules, ..
        } = parser;
        let root = *ids
            .get("root")
            .ok_or("the grammar has no `root` rule, where a sentence starts")?;
        let mut defined = Vec::with_capacity(rules.len());
        for (id, rule) in rules.into_iter().enumerate() {
            defined
                .push(rule.ok_or_else(|| format!("rule `{}` is used but not defined", names[id]))?);
        }
        let grammar = Grammar {
            rules: defined,
            names,
            root,
        };
        grammar.refuse_left_recursion()?;
        Ok(Arc::new(grammar))
    }

    fn element(&self, p: Position) -> &Element {
        &self.rules[p.rule as usize][p.alt as usize][p.index as usize]
    }

    /// The position after `p`, or `None` at the end of its alternative.
    fn next(&self, p: Position) -> Option<Position> {
        let len = self.rules[p.rule as usize][p.alt as usize].len() as u32;
        (p.index + 1 < len).then_some(Position {
            index: p.index + 1,
            ..p
        })
    }

    /// Adds to `out` every stack `stack` stands for with a character class (or nothing) on top:
    /// a rule reference on top becomes each of the rule's alternatives.
    fn expand(&self, mut stack: Stack, out: &mut Vec<Stack>) {
        let Some(&top) = stack.last() else {
            out.push(stack);
            return;
        };
        let Element::Rule(rule) = *self.element(top) else {
            out.push(stack);
            return;
        };
        if stack.len() > MAX_DEPTH {
            return;
        }
        stack.pop();
        if let Some(next) = self.next(top) {
            stack.push(next);
        }
        for (alt, seq) in self.rules[rule as usize].iter().enumerate() {
            let mut s = stack.clone();
            if !seq.is_empty() {
                s.push(Position {
                    rule,
                    alt: alt as u32,
                    index: 0,
                });
            }
            self.expand(s, out);
        }
    }

    /// The stacks after matching `c` on each of `stacks`.
    fn step(&self, stacks: &[Stack], c: u32) -> Vec<Stack> {
        let mut out = Vec::new();
        for stack in stacks {
            let Some(&top) = stack.last() else { continue };
            if matches!(self.element(top), Element::Chars(set) if set.contains(c)) {
                let mut s = stack[..stack.len() - 1].to_vec();
                if let Some(next) = self.next(top) {
                    s.push(next);
                }
                self.expand(s, &mut out);
            }
        }
        dedup(&mut out);
        out
    }

    /// Refuses a rule that can reach itself before matching any character (`a ::= a "x"`, or
    /// through rules that may match nothing): expanding it would never end.
    fn refuse_left_recursion(&self) -> Result<(), String> {
        // Which rules may match nothing, to a fixed point.
        let mut nullable = vec![false; self.rules.len()];
        loop {
            let mut changed = false;
            for (id, alts) in self.rules.iter().enumerate() {
                if !nullable[id]
                    && alts.iter().any(|seq| {
                        seq.iter()
                            .all(|e| matches!(e, Element::Rule(r) if nullable[*r as usize]))
                    })
                {
                    nullable[id] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        // The rules each rule may call before matching a character.
        let leading: Vec<Vec<u32>> = self
            .rules
            .iter()
            .map(|alts| {
                let mut calls = Vec::new();
                for seq in alts {
                    for e in seq {
                        match e {
                            Element::Rule(r) => {
                                calls.push(*r);
                                if !nullable[*r as usize] {
                                    break;
                                }
                            }
                            Element::Chars(_) => break,
                        }
                    }
                }
                calls
            })
            .collect();
        // A depth-first search for a cycle: 0 unseen, 1 on the path, 2 done.
        let mut mark = vec![0u8; self.rules.len()];
        for start in 0..self.rules.len() {
            if mark[start] != 0 {
                continue;
            }
            let mut path = vec![(start, 0usize)];
            mark[start] = 1;
            while let Some((rule, i)) = path.last_mut() {
                let rule = *rule;
                if let Some(&callee) = leading[rule].get(*i) {
                    *i += 1;
                    let callee = callee as usize;
                    match mark[callee] {
                        0 => {
                            mark[callee] = 1;
                            path.push((callee, 0));
                        }
                        1 => {
                            return Err(format!(
                                "rule `{}` is left-recursive (it can reach itself before matching \
                                 a character); rewrite it with repetition, e.g. `x ::= y (\"+\" y)*`",
                                self.names[callee]
                            ));
                        }
                        _ => {}
                    }
                } else {
                    mark[rule] = 2;
                    path.pop();
                }
            }
        }
        Ok(())
    }
}

fn dedup(stacks: &mut Vec<Stack>) {
    stacks.sort_unstable();
    stacks.dedup();
    stacks.truncate(MAX_STACKS);
}

/// The text being parsed, the rules found so far and their names.
struct Parser<'a> {
    src: &'a str,
    /// Byte offset of the next character.
    pos: usize,
    ids: HashMap<String, u32>,
    names: Vec<String>,
    /// `None` for a rule referred to but not (yet) defined.
    rules: Vec<Option<Vec<Sequence>>>,
    elements: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek2(&self) -> Option<char> {
        self.src[self.pos..].chars().nth(1)
    }

    /// An error at the current position: `line L, column C: what`.
    fn error(&self, what: impl std::fmt::Display) -> String {
        let before = &self.src[..self.pos];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let near: String = self.src[self.pos..].chars().take(20).collect();
        match near.is_empty() {
            true => format!("line {line}, column {column}: {what} (at the end)"),
            false => format!("line {line}, column {column}: {what} (at {near:?})"),
        }
    }

    /// Skips spaces, tabs and comments, and line breaks where `newlines` allows them.
    fn skip_space(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' => self.pos += 1,
                '\r' | '\n' if newlines => self.pos += 1,
                '#' => {
                    let rest = &self.src[self.pos..];
                    self.pos += rest.find(['\r', '\n']).unwrap_or(rest.len());
                }
                _ => break,
            }
        }
    }

    fn name(&mut self) -> Result<&str, String> {
        let rest = &self.src[self.pos..];
        let len = rest.find(|c| !is_word_char(c)).unwrap_or(rest.len());
        if len == 0 {
            return Err(self.error("expected a rule name (letters, digits, -)"));
        }
        self.pos += len;
        Ok(&rest[..len])
    }

    /// The id of the rule called `name`, made (undefined) on first sight.
    fn id(&mut self, name: &str) -> Result<u32, String> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        self.new_rule(name.to_string())
    }

    fn new_rule(&mut self, name: String) -> Result<u32, String> {
        if self.rules.len() >= MAX_RULES {
            return Err(self.error(format!("more than {MAX_RULES} rules")));
        }
        let id = self.rules.len() as u32;
        self.ids.insert(name.clone(), id);
        self.names.push(name);
        self.rules.push(None);
        Ok(id)
    }

    /// A helper rule for a group or repetition within `base`.
    fn helper(&mut self, base: &str, alts: Vec<Sequence>) -> Result<u32, String> {
        self.elements += alts.iter().map(Vec::len).sum::<usize>();
        if self.elements > MAX_ELEMENTS {
            return Err(self.too_big());
        }
        let id = self.new_rule(format!("{base}_{}", self.rules.len()))?;
        self.rules[id as usize] = Some(alts);
        Ok(id)
    }

    fn too_big(&self) -> String {
        self.error(format!(
            "the grammar grows past {MAX_ELEMENTS} elements (repetition counts multiply)"
        ))
    }

    /// `name ::= alternatives`, then the end of the line.
    fn rule(&mut self) -> Result<(), String> {
        let name = self.name()?.to_string();
        self.skip_space(false);
        if !self.src[self.pos..].starts_with("::=") {
            return Err(self.error(format!("expected `::=` after the rule name `{name}`")));
        }
        self.pos += 3;
        self.skip_space(true);
        let id = self.id(&name)?;
        let alts = self.alternatives(&name, false)?;
        self.elements += alts.iter().map(Vec::len).sum::<usize>();
        self.rules[id as usize] = Some(alts);
        match self.peek() {
            None | Some('\r' | '\n') => {}
            Some(_) => {
                return Err(self.error(format!("expected the end of the line after rule `{name}`")));
            }
        }
        self.skip_space(true);
        Ok(())
    }

    fn alternatives(&mut self, rule: &str, nested: bool) -> Result<Vec<Sequence>, String> {
        let mut alts = vec![self.sequence(rule, nested)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            self.skip_space(true);
            alts.push(self.sequence(rule, nested)?);
        }
        Ok(alts)
    }

    fn sequence(&mut self, rule: &str, nested: bool) -> Result<Sequence, String> {
        let mut seq = Sequence::new();
        // Where the last item (a literal's characters, a class, a reference, a group) starts:
        // what a repetition operator repeats. `None` before any item, or right after a
        // repetition (llama.cpp repeats the repetition's own reference then; we refuse `a**`).
        let mut last: Option<usize> = None;
        while let Some(c) = self.peek() {
            let start = seq.len();
            match c {
                '"' => {
                    let opening = self.pos;
                    self.pos += 1;
                    self.until(opening, '"', "string literal", |p| {
                        let c = p.char()?;
                        seq.push(Element::Chars(CharSet {
                            ranges: vec![(c, c)],
                            negated: false,
                        }));
                        Ok(())
                    })?;
                    last = Some(start);
                }
                '[' => {
                    let opening = self.pos;
                    self.pos += 1;
                    let negated = self.peek() == Some('^');
                    if negated {
                        self.pos += 1;
                    }
                    let mut ranges = Vec::new();
                    self.until(opening, ']', "character class", |p| {
                        let lo = p.char()?;
                        let hi = if p.peek() == Some('-') && !matches!(p.peek2(), Some(']') | None)
                        {
                            p.pos += 1;
                            p.char()?
                        } else {
                            lo
                        };
                        ranges.push((lo, hi));
                        Ok(())
                    })?;
                    seq.push(Element::Chars(CharSet { ranges, negated }));
                    last = Some(start);
                }
                '.' => {
                    self.pos += 1;
                    seq.push(Element::Chars(CharSet {
                        ranges: Vec::new(),
                        negated: true,
                    }));
                    last = Some(start);
                }
                '<' | '!' => {
                    return Err(self.error(
                        "token references (<...>, !<...>) are not supported; write the token's text as a literal",
                    ));
                }
                '(' => {
                    self.pos += 1;
                    self.skip_space(true);
                    let alts = self.alternatives(rule, true)?;
                    if self.peek() != Some(')') {
                        return Err(self.error("expected `)`"));
                    }
                    self.pos += 1;
                    let id = self.helper(rule, alts)?;
                    seq.push(Element::Rule(id));
                    last = Some(start);
                }
                '*' | '+' | '?' | '{' => {
                    let Some(item_start) = last.take() else {
                        return Err(self.error(format!("`{c}` must follow something to repeat")));
                    };
                    let (min, max) = self.repetition()?;
                    let item = seq.split_off(item_start);
                    self.repeat(rule, &mut seq, item, min, max)?;
                }
                c if is_word_char(c) => {
                    let name = self.name()?.to_string();
                    let id = self.id(&name)?;
                    seq.push(Element::Rule(id));
                    last = Some(start);
                }
                _ => break,
            }
            self.skip_space(nested);
        }
        Ok(seq)
    }

    /// Reads items with `item` up to `close`, which it consumes; the end of the text first is an
    /// error naming `what`, at `opening`, where it began.
    fn until(
        &mut self,
        opening: usize,
        close: char,
        what: &str,
        mut item: impl FnMut(&mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        loop {
            match self.peek() {
                None => {
                    self.pos = opening;
                    return Err(self.error(format!("unterminated {what}")));
                }
                Some(c) if c == close => {
                    self.pos += c.len_utf8();
                    return Ok(());
                }
                Some(_) => item(self)?,
            }
        }
    }

    /// The counts of `*`, `+`, `?` or `{m}`, `{m,}`, `{m,n}` at the cursor; `None`: no maximum.
    fn repetition(&mut self) -> Result<(u64, Option<u64>), String> {
        let c = self.peek();
        self.pos += 1;
        match c {
            Some('*') => return Ok((0, None)),
            Some('+') => return Ok((1, None)),
            Some('?') => return Ok((0, Some(1))),
            _ => {}
        }
        self.skip_space(true);
        let min = self.count()?;
        self.skip_space(true);
        let max = match self.peek() {
            Some('}') => Some(min),
            Some(',') => {
                self.pos += 1;
                self.skip_space(true);
                let max = match self.peek() {
                    Some(c) if c.is_ascii_digit() => Some(self.count()?),
                    _ => None,
                };
                self.skip_space(true);
                if self.peek() != Some('}') {
                    return Err(self.error("expected `}`"));
                }
                max
            }
            _ => return Err(self.error("expected `,` or `}` in a repetition count")),
        };
        self.pos += 1;
        if max.is_some_and(|max| max < min) {
            return Err(self.error(format!(
                "repetition {{{min},{}}}: the maximum is below the minimum",
                max.unwrap_or(0)
            )));
        }
        Ok((min, max))
    }

    fn count(&mut self) -> Result<u64, String> {
        let rest = &self.src[self.pos..];
        let len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..len]
            .parse()
            .map_err(|_| self.error("expected a repetition count"))?;
        if n > MAX_REPETITIONS {
            return Err(self.error(format!(
                "repetition counts are limited to {MAX_REPETITIONS}"
            )));
        }
        self.pos += len;
        Ok(n)
    }

    /// Appends `item` repeated `min` to `max` times to `seq`: `min` copies, then, for no maximum,
    /// a helper `S' ::= item S' | ε`; else `max - min` nested optional copies,
    /// `S'(k) ::= item S'(k-1) | ε`, so that the parse of each count is unique.
    fn repeat(
        &mut self,
        rule: &str,
        seq: &mut Sequence,
        item: Sequence,
        min: u64,
        max: Option<u64>,
    ) -> Result<(), String> {
        // The copies are counted with the rule they end up in; here only whether they would fit.
        if self.elements + seq.len() + min as usize * item.len() > MAX_ELEMENTS {
            return Err(self.too_big());
        }
        for _ in 0..min {
            seq.extend(item.iter().cloned());
        }
        match max {
            None => {
                let id = self.new_rule(format!("{rule}_{}", self.rules.len()))?;
                let mut again = item;
                again.push(Element::Rule(id));
                self.elements += again.len();
                self.rules[id as usize] = Some(vec![again, Vec::new()]);
                seq.push(Element::Rule(id));
            }
            Some(max) => {
                let mut inner: Option<u32> = None;
                for _ in min..max {
                    let mut body = item.clone();
                    body.extend(inner.map(Element::Rule));
                    inner = Some(self.helper(rule, vec![body, Vec::new()])?);
                }
                seq.extend(inner.map(Element::Rule));
            }
        }
        Ok(())
    }

    /// One character of a literal or class, escapes decoded.
    fn char(&mut self) -> Result<u32, String> {
        let c = self.peek().ok_or_else(|| self.error("unexpected end"))?;
        if c != '\\' {
            self.pos += c.len_utf8();
            return Ok(c as u32);
        }
        let escape = self
            .peek2()
            .ok_or_else(|| self.error("unexpected end after `\\`"))?;
        let hex_digits = match escape {
            'x' => 2,
            'u' => 4,
            'U' => 8,
            _ => {
                let c = match escape {
                    't' => '\t',
                    'r' => '\r',
                    'n' => '\n',
                    '\\' | '"' | '[' | ']' | '-' => escape,
                    _ => return Err(self.error(format!("unknown escape `\\{escape}`"))),
                };
                self.pos += 2;
                return Ok(c as u32);
            }
        };
        let digits = self.src[self.pos + 2..]
            .get(..hex_digits)
            .filter(|d| d.chars().all(|c| c.is_ascii_hexdigit()))
            .ok_or_else(|| self.error(format!("`\\{escape}` takes {hex_digits} hex digits")))?;
        let value = u32::from_str_radix(digits, 16).expect("hex digits");
        if char::from_u32(value).is_none() {
            return Err(self.error(format!(
                "`\\{escape}{digits}` is not a Unicode scalar value"
            )));
        }
        self.pos += 2 + hex_digits;
        Ok(value)
    }
}

/// Where one output stands in a grammar.
#[derive(Clone, Debug)]
pub struct GrammarState {
    grammar: Arc<Grammar>,
    stacks: Vec<Stack>,
    /// The start of a character whose other bytes are still to come.
    partial: Vec<u8>,
    /// Bytes the next character may start with (when `partial` is empty): most of a vocabulary
    /// is refused on its first byte without following any parse.
    first: Box<[bool; 256]>,
}

impl GrammarState {
    pub fn new(grammar: Arc<Grammar>) -> GrammarState {
        let mut stacks = Vec::new();
        for alt in 0..grammar.rules[grammar.root as usize].len() {
            let start = Position {
                rule: grammar.root,
                alt: alt as u32,
                index: 0,
            };
            let stack = match grammar.rules[grammar.root as usize][alt].is_empty() {
                true => Vec::new(),
                false => vec![start],
            };
            grammar.expand(stack, &mut stacks);
        }
        dedup(&mut stacks);
        let mut state = GrammarState {
            grammar,
            stacks,
            partial: Vec::new(),
            first: Box::new([false; 256]),
        };
        state.first_bytes();
        state
    }

    fn first_bytes(&mut self) {
        let sets: Vec<&CharSet> = self
            .stacks
            .iter()
            .filter_map(|s| match self.grammar.element(*s.last()?) {
                Element::Chars(set) => Some(set),
                Element::Rule(_) => None,
            })
            .collect();
        for (b, first) in self.first.iter_mut().enumerate() {
            *first = match b as u8 {
                ascii @ 0..=0x7F => sets.iter().any(|s| s.contains(u32::from(ascii))),
                lead @ 0xC2..=0xF4 => {
                    let (lo, hi) = partial_range(&[lead]);
                    sets.iter().any(|s| s.may_meet(lo, hi))
                }
                _ => false,
            };
        }
    }

    /// The stacks and partial character after `bytes`, or `None` if no parse takes them.
    fn after(&self, bytes: &[u8]) -> Option<(Vec<Stack>, Vec<u8>)> {
        if bytes.is_empty() || (self.partial.is_empty() && !self.first[bytes[0] as usize]) {
            return None;
        }
        let mut buf = self.partial.clone();
        buf.extend_from_slice(bytes);
        let (text, tail) = match std::str::from_utf8(&buf) {
            Ok(text) => (text, &[][..]),
            Err(e) if e.error_len().is_none() => {
                let (valid, tail) = buf.split_at(e.valid_up_to());
                (std::str::from_utf8(valid).expect("valid up to here"), tail)
            }
            Err(_) => return None,
        };
        let mut stacks = self.stacks.clone();
        for c in text.chars() {
            stacks = self.grammar.step(&stacks, c as u32);
            if stacks.is_empty() {
                return None;
            }
        }
        if !tail.is_empty() {
            let (lo, hi) = partial_range(tail);
            let fits = stacks.iter().any(|s| {
                s.last().is_some_and(|&top| {
                    matches!(self.grammar.element(top), Element::Chars(set) if set.may_meet(lo, hi))
                })
            });
            if !fits {
                return None;
            }
        }
        Some((stacks, tail.to_vec()))
    }

    /// Whether appending `bytes` keeps the output a prefix of some sentence.
    pub fn allows(&self, bytes: &[u8]) -> bool {
        self.after(bytes).is_some()
    }

    /// Appends `bytes`; false (and no change) if they do not fit.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        match self.after(bytes) {
            Some((stacks, partial)) => {
                self.stacks = stacks;
                self.partial = partial;
                self.first_bytes();
                true
            }
            None => false,
        }
    }

    /// The output is a whole sentence and nothing can follow it.
    pub fn is_complete(&self) -> bool {
        self.partial.is_empty() && self.stacks.iter().all(Vec::is_empty)
    }

    /// The output is a whole sentence (more may follow).
    pub fn can_end(&self) -> bool {
        self.partial.is_empty() && self.stacks.iter().any(Vec::is_empty)
    }
}

/// The code points a character starting with `prefix` (1 to 3 bytes of a longer UTF-8
/// sequence) can be.
fn partial_range(prefix: &[u8]) -> (u32, u32) {
    let lead = prefix[0];
    let (len, bits) = match lead {
        0xC0..=0xDF => (2, u32::from(lead & 0x1F)),
        0xE0..=0xEF => (3, u32::from(lead & 0x0F)),
        _ => (4, u32::from(lead & 0x07)),
    };
    let mut value = bits;
    for &b in &prefix[1..] {
        value = (value << 6) | u32::from(b & 0x3F);
    }
    let missing = 6 * (len - prefix.len()) as u32;
    (value << missing, ((value + 1) << missing) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(grammar: &str, text: &str) -> bool {
        let mut state = GrammarState::new(Grammar::parse(grammar).unwrap());
        state.feed(text.as_bytes()) && state.can_end()
    }

    fn prefix_ok(grammar: &str, text: &str) -> bool {
        GrammarState::new(Grammar::parse(grammar).unwrap()).allows(text.as_bytes())
    }

    #[test]
    fn literals_alternatives_and_classes() {
        let g = r#"root ::= "yes" | "no" | [0-9]+ "%""#;
        for ok in ["yes", "no", "7%", "100%"] {
            assert!(accepts(g, ok), "{ok}");
        }
        for bad in ["maybe", "%", "7", "yess"] {
            assert!(!accepts(g, bad), "{bad}");
        }
        assert!(prefix_ok(g, "ye") && prefix_ok(g, "12") && !prefix_ok(g, "y3"));
    }

    #[test]
    fn repetition_counts_are_exact() {
        let g = r#"root ::= "a"{2,4} "b"{3} ("c" "d"){1,} "e"?"#;
        assert!(accepts(g, "aabbbcd"));
        assert!(accepts(g, "aaaabbbcdcde"));
        assert!(!accepts(g, "abbbcd"));
        assert!(!accepts(g, "aaaaabbbcd"));
        assert!(!accepts(g, "aabbcd"));
        assert!(!accepts(g, "aabbb"));
        assert!(!accepts(g, "aabbbcdee"));
    }

    #[test]
    fn negated_classes_any_char_escapes_and_unicode() {
        let g = "root ::= \"\\\"\" [^\"\\n]* \"\\\"\" . [\\u00e9-\\u00ea\\x41] \"\\U0001F600\"";
        assert!(accepts(g, "\"hé llo\"xê😀"));
        assert!(accepts(g, "\"\"!A😀"));
        assert!(!accepts(g, "\"a\nb\"xA😀"));
        assert!(!accepts(g, "\"ab\"xB😀"));
    }

    #[test]
    fn a_character_split_across_tokens_is_checked_by_its_first_bytes() {
        let g = Grammar::parse("root ::= [é] \"!\"").unwrap();
        let é = "é".as_bytes();
        let mut state = GrammarState::new(g.clone());
        assert!(state.feed(&é[..1]));
        assert!(!state.can_end());
        assert!(state.feed(&é[1..]));
        assert!(state.feed(b"!") && state.is_complete());
        // The first byte of "ü" (same lead byte) fits; "€"'s lead byte does not.
        assert!(GrammarState::new(g.clone()).allows(&"ü".as_bytes()[..1]));
        assert!(!GrammarState::new(g.clone()).allows(&"€".as_bytes()[..1]));
        assert!(!GrammarState::new(g).allows(b"\xff"));
    }

    #[test]
    fn multi_line_rules_groups_comments_and_recursion() {
        let g = r#"
            # arithmetic, as llama.cpp's grammars/arithmetic.gbnf describes it
            root  ::= (expr "=" ws term "\n")+
            expr  ::= term ([-+*/] term)*
            term  ::= ident | num | "(" ws expr ")" ws
            ident ::= [a-z] [a-z0-9_]* ws
            num   ::= [0-9]+ ws
            ws    ::= [ \t\n]*
        "#;
        assert!(accepts(g, "1+2= 3\n"));
        assert!(accepts(g, "(a*(b+1))= x\nq= 2\n"));
        assert!(!accepts(g, "(a*(b+1)= x\n"));
        assert!(!accepts(g, "1+= 3\n"));
        let json = r#"
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= | " " | "\n" [ \t]{0,20}
"#;
        assert!(accepts(
            json,
            r#"{"a": [1, 2.5, {"b": null}], "c\u00e9": "x\"y"}"#
        ));
        assert!(!accepts(json, r#"{"a": [1, 2.5,]}"#));
        assert!(!accepts(json, r#"{"a" 1}"#));
    }

    #[test]
    fn the_end_is_known() {
        let mut s = GrammarState::new(Grammar::parse(r#"root ::= "ab" "c"?"#).unwrap());
        assert!(!s.can_end());
        assert!(s.feed(b"ab"));
        assert!(s.can_end() && !s.is_complete());
        assert!(s.feed(b"c"));
        assert!(s.is_complete());
        assert!(!s.allows(b"c"));
        assert!(!s.feed(b"") && s.is_complete());
    }

    #[test]
    fn bad_grammars_are_refused_with_where_and_why() {
        let err = |g: &str| Grammar::parse(g).unwrap_err();
        assert!(err("expr ::= \"a\"").contains("no `root` rule"));
        assert!(err("root ::= item").contains("`item` is used but not defined"));
        assert_eq!(
            err("root ::= \"a\"\nb ::= \"x\n"),
            "line 2, column 7: unterminated string literal (at \"\\\"x\\n\")"
        );
        assert!(err("root ::= [a-").contains("unterminated character class"));
        assert!(
            err("root ::= \"a\" ) ").starts_with("line 1, column 14: expected the end of the line")
        );
        assert!(err("root = \"a\"").contains("expected `::=`"));
        assert!(err("root ::= * \"a\"").contains("`*` must follow something to repeat"));
        assert!(err("root ::= \"a\"{3,2}").contains("maximum is below the minimum"));
        assert!(err("root ::= \"a\"{5000}").contains("limited to 2000"));
        assert!(err("root ::= \"\\q\"").contains("unknown escape `\\q`"));
        assert!(err("root ::= \"\\uD800\"").contains("not a Unicode scalar value"));
        assert!(err("root ::= <[42]>").contains("token references"));
        assert!(
            err(&format!("root ::= {}", "\"0123456789\"{2000} ".repeat(11))).contains("grows past")
        );
        assert!(err("root ::= \"a\"*{2}").contains("`{` must follow something to repeat"));
        let left = err("root ::= expr\nexpr ::= expr \"+\" term | term\nterm ::= [0-9]");
        assert!(left.contains("rule `expr` is left-recursive"), "{left}");
        let hidden = err("root ::= opt root \"x\" | \"y\"\nopt ::= \"o\"?");
        assert!(hidden.contains("rule `root` is left-recursive"), "{hidden}");
    }

    #[test]
    fn ambiguous_grammars_stay_bounded() {
        // Every split of the letters between the two runs is a parse; they collapse to a few.
        let g = Grammar::parse("root ::= [a-z]* [a-z]* [a-z]*").unwrap();
        let mut s = GrammarState::new(g);
        for _ in 0..1000 {
            assert!(s.feed(b"ab"));
            assert!(s.stacks.len() <= 8, "{}", s.stacks.len());
        }
        // Nesting deeper than MAX_DEPTH is dropped, not followed forever.
        let g = Grammar::parse("root ::= \"(\" root \")\" | \"x\"").unwrap();
        let mut s = GrammarState::new(g);
        for _ in 0..MAX_DEPTH + 10 {
            if !s.feed(b"(") {
                return;
            }
        }
        panic!("the nesting was never cut");
    }
}
