//! Metadata values, read lazily from the file's bytes, and the bounds-checked reader under them.

use std::fmt;

/// Arrays of arrays may nest this deep. GGUF writers never nest more than once; the limit keeps a
/// hostile file from exhausting the stack through recursion.
const MAX_NESTING: u32 = 32;

/// The type tag of a metadata value (GGUF's `gguf_type`, with its numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    /// The type with GGUF id `id`, or `None` for an id GGUF does not define.
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The name used in error messages.
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    /// Bytes of one value, for the types whose values all have the same size.
    fn fixed_size(self) -> Option<usize> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }

    /// The fewest bytes one value can take: an untrusted count times this must fit in what is
    /// left of the file before anything is sized by the count.
    pub(crate) fn min_size(self) -> usize {
        match self {
            ValueType::String => 8,    // u64 length
            ValueType::Array => 4 + 8, // element type, u64 count
            fixed => fixed.fixed_size().unwrap_or(1),
        }
    }
}

/// A metadata value. Strings and arrays borrow the file's bytes.
#[derive(Clone, Copy, PartialEq)]
pub enum Value<'a> {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    /// Raw bytes: GGUF does not promise UTF-8 (vocabulary pieces can be partial characters).
    String(&'a [u8]),
    Array(Array<'a>),
}

impl<'a> Value<'a> {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F32(_) => ValueType::F32,
            Value::F64(_) => ValueType::F64,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
        }
    }

    /// The value of any integer type, when it is an integer with a value that fits an `i128`
    /// (all of them do). Writers differ in the integer type they use for the same key.
    fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value as a `u64`, when it is an integer of any type and is not negative.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_integer().and_then(|v| u64::try_from(v).ok())
    }

    /// The value as an `i64`, when it is an integer of any type that fits.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_integer().and_then(|v| i64::try_from(v).ok())
    }

    /// The value's bytes as GGUF stores them after its type tag.
    pub(crate) fn write_payload(&self, out: &mut Vec<u8>) {
        match *self {
            Value::U8(v) => out.push(v),
            Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Bool(v) => out.push(v.into()),
            Value::String(s) => write_string(out, s),
            Value::Array(a) => {
                out.extend_from_slice(&(a.elem_type as u32).to_le_bytes());
                out.extend_from_slice(&(a.len as u64).to_le_bytes());
                out.extend_from_slice(a.bytes);
            }
        }
    }

    /// What the value is, for error messages: `u32`, `string`, `array of 3 f32`.
    pub fn describe(&self) -> String {
        match self {
            Value::Array(a) => format!("array of {} {}", a.len(), a.elem_type().name()),
            v => v.value_type().name().to_string(),
        }
    }
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::U8(v) => write!(f, "U8({v})"),
            Value::I8(v) => write!(f, "I8({v})"),
            Value::U16(v) => write!(f, "U16({v})"),
            Value::I16(v) => write!(f, "I16({v})"),
            Value::U32(v) => write!(f, "U32({v})"),
            Value::I32(v) => write!(f, "I32({v})"),
            Value::U64(v) => write!(f, "U64({v})"),
            Value::I64(v) => write!(f, "I64({v})"),
            Value::F32(v) => write!(f, "F32({v:?})"),
            Value::F64(v) => write!(f, "F64({v:?})"),
            Value::Bool(v) => write!(f, "Bool({v})"),
            Value::String(s) => write!(f, "String({:?})", String::from_utf8_lossy(s)),
            Value::Array(a) => a.fmt(f),
        }
    }
}

/// A GGUF string: u64 length, then the bytes.
pub(crate) fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

/// An array value: element type, count, and the elements' bytes, decoded only when asked, so that
/// a 150k-entry vocabulary costs no allocation until it is used.
///
/// The bytes were walked once at parse time, so every element is known to be complete.
#[derive(Clone, Copy, PartialEq)]
pub struct Array<'a> {
    elem_type: ValueType,
    len: usize,
    bytes: &'a [u8],
}

impl<'a> Array<'a> {
    /// An array to write: `len` elements of `elem_type`, `bytes` laid out as GGUF stores them
    /// (strings as a u64 length and the bytes). Written as given; reading it back trusts them.
    pub fn laid_out(elem_type: ValueType, len: usize, bytes: &'a [u8]) -> Array<'a> {
        Array {
            elem_type,
            len,
            bytes,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn elem_type(&self) -> ValueType {
        self.elem_type
    }

    /// The elements in order. Nested arrays come out as [`Value::Array`].
    pub fn iter(&self) -> ArrayIter<'a> {
        ArrayIter {
            elem_type: self.elem_type,
            left: self.len,
            reader: Reader::new(self.bytes),
        }
    }

    /// The elements of an array of strings, or `None` for another element type.
    pub fn as_strings(&self) -> Option<Vec<&'a [u8]>> {
        if self.elem_type != ValueType::String {
            return None;
        }
        let mut out = Vec::with_capacity(self.len);
        out.extend(self.iter().filter_map(|v| match v {
            Value::String(s) => Some(s),
            _ => None,
        }));
        Some(out)
    }

    /// The elements of an array of f32, or `None` for another element type.
    pub fn as_f32s(&self) -> Option<Vec<f32>> {
        (self.elem_type == ValueType::F32).then(|| self.words().map(f32::from_le_bytes).collect())
    }

    /// The elements of an array of i32, or of u32 that all fit an i32 (writers use either for
    /// token types); `None` otherwise.
    pub fn as_i32s(&self) -> Option<Vec<i32>> {
        match self.elem_type {
            ValueType::I32 => Some(self.words().map(i32::from_le_bytes).collect()),
            ValueType::U32 => self
                .words()
                .map(|w| i32::try_from(u32::from_le_bytes(w)).ok())
                .collect(),
            _ => None,
        }
    }

    /// The elements as 4-byte words; only meaningful for 4-byte element types.
    fn words(&self) -> impl Iterator<Item = [u8; 4]> + 'a {
        self.bytes.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]])
    }
}

impl fmt::Debug for Array<'_> {
    /// Element type and count only: printing a vocabulary would drown everything else.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Array({} x {})", self.len, self.elem_type.name())
    }
}

impl<'a> IntoIterator for &Array<'a> {
    type Item = Value<'a>;
    type IntoIter = ArrayIter<'a>;
    fn into_iter(self) -> ArrayIter<'a> {
        self.iter()
    }
}

/// Iterator over the elements of an [`Array`].
#[derive(Clone)]
pub struct ArrayIter<'a> {
    elem_type: ValueType,
    left: usize,
    reader: Reader<'a>,
}

impl<'a> Iterator for ArrayIter<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The bytes were validated when the file was parsed; should a read fail anyway, the
        // iteration ends rather than yielding garbage.
        match self.reader.value(self.elem_type, 0) {
            Ok(v) => Some(v),
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for ArrayIter<'_> {}

/// A read that failed: where (relative to the reader's slice) and why. The parser adds the name
/// of the item being read.
#[derive(Debug)]
pub(crate) struct Fail {
    pub at: usize,
    pub msg: String,
}

/// Reads little-endian items from a slice; every read checks the length first.
#[derive(Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes; `what` names them in the error.
    pub fn bytes(&mut self, n: u64, what: &str) -> Result<&'a [u8], Fail> {
        let left = self.remaining();
        if n > left as u64 {
            return Err(Fail {
                at: self.pos,
                msg: format!("truncated: {what} needs {n} bytes but only {left} remain"),
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Fail> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N as u64, what)?);
        Ok(a)
    }

    pub fn u32(&mut self, what: &str) -> Result<u32, Fail> {
        self.fixed(what).map(u32::from_le_bytes)
    }

    pub fn u64(&mut self, what: &str) -> Result<u64, Fail> {
        self.fixed(what).map(u64::from_le_bytes)
    }

    /// A GGUF string: u64 length, then that many bytes.
    pub fn string(&mut self, what: &str) -> Result<&'a [u8], Fail> {
        let n = self.u64(what)?;
        self.bytes(n, what)
    }

    /// One value of type `ty`; `depth` is how many arrays enclose it.
    pub fn value(&mut self, ty: ValueType, depth: u32) -> Result<Value<'a>, Fail> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.fixed::<1>("u8 value").map(u8::from_le_bytes)?),
            ValueType::I8 => Value::I8(self.fixed::<1>("i8 value").map(i8::from_le_bytes)?),
            ValueType::U16 => Value::U16(self.fixed("u16 value").map(u16::from_le_bytes)?),
            ValueType::I16 => Value::I16(self.fixed("i16 value").map(i16::from_le_bytes)?),
            ValueType::U32 => Value::U32(self.fixed("u32 value").map(u32::from_le_bytes)?),
            ValueType::I32 => Value::I32(self.fixed("i32 value").map(i32::from_le_bytes)?),
            ValueType::U64 => Value::U64(self.fixed("u64 value").map(u64::from_le_bytes)?),
            ValueType::I64 => Value::I64(self.fixed("i64 value").map(i64::from_le_bytes)?),
            ValueType::F32 => Value::F32(self.fixed("f32 value").map(f32::from_le_bytes)?),
            ValueType::F64 => Value::F64(self.fixed("f64 value").map(f64::from_le_bytes)?),
            // Any non-zero byte is true, as llama.cpp reads it.
            ValueType::Bool => Value::Bool(self.fixed::<1>("bool value")?[0] != 0),
            ValueType::String => Value::String(self.string("string value")?),
            ValueType::Array => Value::Array(self.array(depth)?),
        })
    }

    /// An array: element type, u64 count, elements. The count is checked against the bytes left
    /// before it is used, and every element is walked so that iteration later cannot run short.
    fn array(&mut self, depth: u32) -> Result<Array<'a>, Fail> {
        let type_at = self.pos;
        let id = self.u32("array element type")?;
        let Some(elem_type) = ValueType::from_id(id) else {
            return Err(Fail {
                at: type_at,
                msg: format!("unknown array element type {id}"),
            });
        };
        if elem_type == ValueType::Array && depth + 1 >= MAX_NESTING {
            return Err(Fail {
                at: type_at,
                msg: format!("arrays nested more than {MAX_NESTING} deep"),
            });
        }
        let count_at = self.pos;
        let count = self.u64("array length")?;
        let left = self.remaining();
        let min = elem_type.min_size();
        if count > (left / min) as u64 {
            return Err(Fail {
                at: count_at,
                msg: format!(
                    "truncated: array of {count} {} needs at least {} bytes but only {left} remain",
                    elem_type.name(),
                    u128::from(count) * min as u128
                ),
            });
        }
        // count * min <= left, so neither the cast nor the products below overflow.
        let len = count as usize;
        let start = self.pos;
        match elem_type.fixed_size() {
            Some(size) => {
                self.bytes((len * size) as u64, "array elements")?;
            }
            None => {
                for _ in 0..len {
                    self.value(elem_type, depth + 1)?;
                }
            }
        }
        Ok(Array {
            elem_type,
            len,
            bytes: &self.buf[start..self.pos],
        })
    }
}
