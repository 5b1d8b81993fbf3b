//! PyTorch `.pt` files holding one bare tensor, as Python's `torch.save`
//! writes them (the zip format, torch >= 1.6): read and write, no libtorch.
//!
//! A `.pt` file is a zip archive (entries stored, not compressed) under one
//! top folder (`archive/`, or the file's stem for files saved by recent torch):
//! - `data.pkl`: a pickle (protocol 2) whose value is
//!   `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`,
//!   `storage` being a persistent id `('storage', torch.FloatStorage, '0', 'cpu', numel)`;
//! - `data/0`: the storage's raw bytes (little-endian);
//! - `version`, `byteorder`, `.format_version`, `.storage_alignment`.
//!
//! Why a small pickle reader instead of a dependency: the only crate with a
//! torch-pickle reader (candle-core's `pickle` module) pulls in a whole tensor
//! library for ~300 lines we need, and a general unpickler is exactly what must
//! not run on downloaded files. This reader understands the opcode subset the
//! tensor rebuild uses and imports nothing: a pickle naming any global other
//! than the torch rebuild/storage ones (`os.system`, ...) is refused before
//! anything else happens. The zip container is read with the `zip` crate, which
//! also checks each entry's CRC-32, so flipped bytes are caught.
//!
//! Legacy (pre-1.6, non-zip) `.pt` files are refused with a message saying so.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// A `.pt` problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {msg}", path.display())]
pub struct PtError {
    pub path: PathBuf,
    pub msg: String,
}

fn err(path: &Path, msg: impl Into<String>) -> PtError {
    PtError {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Element types a torch storage may have, by their storage class name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    fn from_storage(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    pub fn torch_name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        }
    }
}

/// What `data.pkl` says about the tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorHeader {
    pub dtype: DType,
    /// The storage's entry name under `data/`.
    pub storage_key: String,
    pub storage_numel: usize,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// Opens a `.pt` file holding one float32 tensor of exactly `shape`
/// (C-contiguous, little-endian, inside its storage): the archive, what its
/// pickle says, and the storage entry's name. Reads no voxel.
fn open_f32(
    path: &Path,
    shape: &[usize],
) -> Result<(zip::ZipArchive<File>, TensorHeader, String), PtError> {
    let file = File::open(path).map_err(|e| err(path, format!("cannot open: {e}")))?;
    let mut magic = [0u8; 4];
    let mut reader = BufReader::new(file);
    reader.read_exact(&mut magic).map_err(|_| {
        err(
            path,
            "file is shorter than 4 bytes: truncated or not a .pt file",
        )
    })?;
    if &magic != b"PK\x03\x04" {
        return Err(err(
            path,
            "not a zip-format torch file (a legacy pre-1.6 `torch.save` file or not a .pt file at all); \
             re-save it with a recent torch (`torch.save(torch.load(f), f)`)",
        ));
    }
    let file = reader.into_inner();
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        err(
            path,
            format!("not a readable zip archive (truncated or corrupt?): {e}"),
        )
    })?;
    let pkl_names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok())
        .filter(|n| n.ends_with("/data.pkl"))
        .map(|n| n.into_owned())
        .collect();
    let pkl_name = match pkl_names.as_slice() {
        [one] => one.clone(),
        [] => return Err(err(path, "no `*/data.pkl` entry: not a torch.save file")),
        _ => {
            return Err(err(
                path,
                format!(
                    "several pickles ({}): not a single-tensor file",
                    pkl_names.join(", ")
                ),
            ))
        }
    };
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let pkl = read_entry(&mut zip, path, &pkl_name, 1 << 20)?;
    if let Some(order) = zip.index_for_name(&format!("{prefix}byteorder")) {
        let e = zip
            .by_index(order)
            .map_err(|e| err(path, format!("byteorder entry: {e}")))?;
        let mut s = String::new();
        e.take(64)
            .read_to_string(&mut s)
            .map_err(|e| err(path, format!("byteorder entry: {e}")))?;
        if s.trim() != "little" {
            return Err(err(
                path,
                format!(
                    "byte order `{}` is not supported (only little-endian)",
                    s.trim()
                ),
            ));
        }
    }
    let header = parse_tensor_pickle(&pkl).map_err(|m| err(path, format!("{pkl_name}: {m}")))?;
    if header.dtype != DType::F32 {
        return Err(err(
            path,
            format!(
                "tensor has dtype {}, expected float32",
                header.dtype.torch_name()
            ),
        ));
    }
    if header.shape != shape {
        return Err(err(
            path,
            format!("tensor has shape {:?}, expected {:?}", header.shape, shape),
        ));
    }
    if header.stride != contiguous_stride(shape) {
        return Err(err(
            path,
            format!(
                "tensor is not contiguous (stride {:?}); save `t.contiguous()`",
                header.stride
            ),
        ));
    }
    let numel: usize = shape.iter().product();
    if header
        .offset
        .checked_add(numel)
        .is_none_or(|end| end > header.storage_numel)
    {
        return Err(err(
            path,
            format!(
                "tensor needs elements {}..{} but its storage holds {}",
                header.offset,
                header.offset.saturating_add(numel),
                header.storage_numel
            ),
        ));
    }
    let data_name = format!("{prefix}data/{}", header.storage_key);
    Ok((zip, header, data_name))
}

/// Read a float32 tensor of exactly `shape` (C-contiguous) from a `.pt` file.
pub fn read_f32(path: &Path, shape: &[usize]) -> Result<Vec<f32>, PtError> {
    let (mut zip, header, data_name) = open_f32(path, shape)?;
    let numel: usize = shape.iter().product();
    let bytes = read_entry(
        &mut zip,
        path,
        &data_name,
        header.storage_numel.saturating_mul(4),
    )?;
    if bytes.len() != header.storage_numel * 4 {
        return Err(err(
            path,
            format!(
                "{data_name} holds {} bytes, the pickle says {} float32 ({} bytes): truncated?",
                bytes.len(),
                header.storage_numel,
                header.storage_numel * 4
            ),
        ));
    }
    let start = header.offset * 4;
    Ok(bytes
        .get(start..start + numel * 4)
        .unwrap_or_default()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The box `bx` (`[start, end)` per axis of `shape`) of the float32 tensor
/// [`read_f32`] reads, in C order: the values `read_f32` followed by cutting
/// the box out would give, with the same checks (the storage entry's CRC-32
/// included), in about a quarter of the time. `crop` reads every volume for
/// a 34×44×34 box, and what made `read_f32` slow was streaming the entry
/// through the zip reader and converting all 2.1 M values: here the stored
/// entry's bytes are read with one positioned read, hashed with `crc32fast`,
/// and only the box is converted. An entry that is not stored (not
/// `torch.save`'s layout) goes through `read_f32`.
pub fn read_f32_box(path: &Path, shape: &[usize], bx: &[[usize; 2]]) -> Result<Vec<f32>, PtError> {
    if bx.len() != shape.len() || bx.iter().zip(shape).any(|(&[a, b], &n)| a >= b || b > n) {
        return Err(err(
            path,
            format!("bug: box {bx:?} is not a non-empty box inside shape {shape:?}"),
        ));
    }
    let (mut zip, header, data_name) = open_f32(path, shape)?;
    let (start, size, crc, stored) = {
        let entry = zip
            .by_name(&data_name)
            .map_err(|e| err(path, format!("entry `{data_name}`: {e}")))?;
        (
            entry.data_start(),
            entry.size(),
            entry.crc32(),
            entry.compression() == zip::CompressionMethod::Stored,
        )
    };
    let Some(start) = start.filter(|_| stored) else {
        return read_f32(path, shape).map(|v| cut_box(&v, shape, bx));
    };
    let want = header.storage_numel.saturating_mul(4);
    if size != want as u64 {
        return Err(err(
            path,
            format!(
                "{data_name} holds {size} bytes, the pickle says {} float32 ({want} bytes): truncated?",
                header.storage_numel
            ),
        ));
    }
    // One buffer per thread, reused: a fresh 8.5 MB vector per volume costs
    // its zeroing and page faults, as much as the read itself.
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with_borrow_mut(|bytes| {
        bytes.resize(want, 0);
        use std::os::unix::fs::FileExt;
        zip.into_inner().read_exact_at(bytes, start).map_err(|e| {
            err(
                path,
                format!("entry `{data_name}` cannot be read (truncated or corrupt file): {e}"),
            )
        })?;
        if crc32fast::hash(bytes) != crc {
            return Err(err(
                path,
                format!(
                    "entry `{data_name}` cannot be read (truncated or corrupt file): its CRC-32 does not match"
                ),
            ));
        }
        let numel: usize = shape.iter().product();
        let values = bytes
            .get(header.offset * 4..(header.offset + numel) * 4)
            .unwrap_or_default();
        Ok(cut_box_le(values, shape, bx))
    })
}

/// The box `bx` of a C-order array of `shape` (`[start, end)` per axis).
fn cut_box(values: &[f32], shape: &[usize], bx: &[[usize; 2]]) -> Vec<f32> {
    let mut out = Vec::new();
    for_each_run(shape, bx, |start, len| {
        out.extend_from_slice(values.get(start..start + len).unwrap_or_default());
    });
    out
}

/// [`cut_box`] of little-endian float32 bytes.
fn cut_box_le(bytes: &[u8], shape: &[usize], bx: &[[usize; 2]]) -> Vec<f32> {
    let mut out = Vec::new();
    for_each_run(shape, bx, |start, len| {
        let run = bytes.get(start * 4..(start + len) * 4).unwrap_or_default();
        out.extend(
            run.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    });
    out
}

/// Calls `f(start, len)` for each contiguous run of the box along the last
/// axis, in C order: the box's elements are `start..start + len` of each run.
fn for_each_run(shape: &[usize], bx: &[[usize; 2]], mut f: impl FnMut(usize, usize)) {
    let Some((&[z0, z1], outer)) = bx.split_last() else {
        return;
    };
    let stride = contiguous_stride(shape);
    // Odometer over the box's indices on every axis but the last.
    let mut index: Vec<usize> = outer.iter().map(|&[a, _]| a).collect();
    loop {
        let base: usize = index.iter().zip(&stride).map(|(i, s)| i * s).sum();
        f(base + z0, z1 - z0);
        let mut axis = index.len();
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            index[axis] += 1;
            if index[axis] < outer[axis][1] {
                break;
            }
            index[axis] = outer[axis][0];
        }
    }
}

/// Read one zip entry whole, refusing one larger than `max` bytes (so a lying
/// header cannot make us allocate gigabytes). The zip crate checks the CRC.
fn read_entry<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    path: &Path,
    name: &str,
    max: usize,
) -> Result<Vec<u8>, PtError> {
    let entry = zip
        .by_name(name)
        .map_err(|e| err(path, format!("entry `{name}`: {e}")))?;
    let size = entry.size();
    if size > max as u64 {
        return Err(err(
            path,
            format!("entry `{name}` is {size} bytes, more than the {max} expected"),
        ));
    }
    let mut buf = Vec::with_capacity(size as usize);
    entry
        .take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| {
            err(
                path,
                format!("entry `{name}` cannot be read (truncated or corrupt file): {e}"),
            )
        })?;
    Ok(buf)
}

fn contiguous_stride(shape: &[usize]) -> Vec<usize> {
    let mut stride = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * shape[i + 1];
    }
    stride
}

/// A value on the restricted unpickler's stack. Payloads the tensor rebuild
/// ignores are kept for the `Debug` text of error messages.
#[allow(dead_code)]
#[derive(Debug, Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    Dict,
    List,
    Global(Global),
    Storage {
        dtype: DType,
        key: String,
        numel: usize,
    },
    Tensor(TensorHeader),
}

/// The only globals a tensor pickle may name.
#[derive(Debug, Clone, Copy)]
enum Global {
    RebuildTensorV2,
    OrderedDict,
    Storage(DType),
}

fn resolve_global(module: &str, name: &str) -> Result<Global, String> {
    match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => Ok(Global::RebuildTensorV2),
        ("collections", "OrderedDict") => Ok(Global::OrderedDict),
        ("torch", storage) => DType::from_storage(storage)
            .map(Global::Storage)
            .ok_or_else(|| refuse(module, name)),
        _ => Err(refuse(module, name)),
    }
}

fn refuse(module: &str, name: &str) -> String {
    format!(
            "refused: the pickle asks to import `{module}.{name}`; only torch's tensor-rebuild globals are \
             allowed (this file is not a plain tensor saved by torch.save, or it is malicious). Nothing was executed."
    )
}

/// Run the restricted unpickler over `data.pkl` and return the tensor it builds.
pub fn parse_tensor_pickle(pkl: &[u8]) -> Result<TensorHeader, String> {
    let mut pos = 0usize;
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = pkl
            .get(*pos..*pos + n)
            .ok_or_else(|| format!("pickle ends early at byte {}", *pos))?;
        *pos += n;
        Ok(s)
    };
    let line = |pos: &mut usize| -> Result<String, String> {
        let rest = pkl.get(*pos..).unwrap_or_default();
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("pickle ends inside a GLOBAL name")?;
        let s = String::from_utf8(rest[..end].to_vec()).map_err(|_| "GLOBAL name is not UTF-8")?;
        *pos += end + 1;
        Ok(s)
    };
    fn pop(stack: &mut Vec<Value>) -> Result<Value, String> {
        stack
            .pop()
            .ok_or_else(|| "pickle pops from an empty stack".to_string())
    }
    fn pop_mark(stack: &mut Vec<Value>, marks: &mut Vec<usize>) -> Result<Vec<Value>, String> {
        let m = marks.pop().ok_or("pickle closes a MARK it never opened")?;
        if m > stack.len() {
            return Err("pickle MARK points past the stack".into());
        }
        Ok(stack.split_off(m))
    }
    loop {
        let at = pos;
        let op = *take(&mut pos, 1)?.first().unwrap_or(&0);
        match op {
            0x80 => {
                take(&mut pos, 1)?;
            }
            0x95 => {
                take(&mut pos, 8)?;
            }
            b'c' => {
                let module = line(&mut pos)?;
                let name = line(&mut pos)?;
                stack.push(Value::Global(resolve_global(&module, &name)?));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Value::Global(resolve_global(&m, &n)?)),
                    _ => return Err(format!("STACK_GLOBAL at byte {at} without two strings")),
                }
            }
            b'q' | b'r' | 0x94 => {
                let idx = match op {
                    b'q' => u32::from(take(&mut pos, 1)?[0]),
                    b'r' => u32::from_le_bytes(take(&mut pos, 4)?.try_into().map_err(|_| "bad LONG_BINPUT")?),
                    _ => memo.len() as u32,
                };
                let top = stack.last().ok_or("memo put on an empty stack")?.clone();
                memo.insert(idx, top);
            }
            b'h' | b'j' => {
                let idx = if op == b'h' {
                    u32::from(take(&mut pos, 1)?[0])
                } else {
                    u32::from_le_bytes(take(&mut pos, 4)?.try_into().map_err(|_| "bad LONG_BINGET")?)
                };
                stack.push(memo.get(&idx).cloned().ok_or(format!("memo slot {idx} is empty (byte {at})"))?);
            }
            b'(' => marks.push(stack.len()),
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => u32::from_le_bytes(take(&mut pos, 4)?.try_into().map_err(|_| "bad length")?) as usize,
                    0x8c => usize::from(take(&mut pos, 1)?[0]),
                    _ => u64::from_le_bytes(take(&mut pos, 8)?.try_into().map_err(|_| "bad length")?) as usize,
                };
                if n > pkl.len() {
                    return Err(format!("string at byte {at} is longer than the pickle"));
                }
                let s = String::from_utf8(take(&mut pos, n)?.to_vec()).map_err(|_| "string is not UTF-8")?;
                stack.push(Value::Str(s));
            }
            b'K' => stack.push(Value::Int(i64::from(take(&mut pos, 1)?[0]))),
            b'M' => {
                let b = take(&mut pos, 2)?;
                stack.push(Value::Int(i64::from(u16::from_le_bytes([b[0], b[1]]))));
            }
            b'J' => {
                let b = take(&mut pos, 4)?;
                stack.push(Value::Int(i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))));
            }
            0x8a => {
                let n = usize::from(take(&mut pos, 1)?[0]);
                if n > 8 {
                    return Err(format!("integer at byte {at} is wider than 64 bits"));
                }
                let b = take(&mut pos, n)?;
                let mut v: i64 = 0;
                for (i, &byte) in b.iter().enumerate() {
                    v |= i64::from(byte) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v));
            }
            b'G' => {
                let b = take(&mut pos, 8)?;
                stack.push(Value::Float(f64::from_be_bytes(b.try_into().map_err(|_| "bad float")?)));
            }
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b't' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if stack.len() < n {
                    return Err(format!("TUPLE{n} at byte {at} on a short stack"));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'}' => stack.push(Value::Dict),
            b']' => stack.push(Value::List),
            b's' => {
                pop(&mut stack)?;
                pop(&mut stack)?;
            }
            b'u' | b'e' => {
                pop_mark(&mut stack, &mut marks)?;
            }
            b'a' => {
                pop(&mut stack)?;
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                stack.push(persistent_storage(pid)?);
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                let Value::Tuple(args) = args else {
                    return Err(format!("REDUCE at byte {at} without an argument tuple"));
                };
                match callable {
                    Value::Global(Global::OrderedDict) => stack.push(Value::Dict),
                    Value::Global(Global::RebuildTensorV2) => stack.push(Value::Tensor(rebuild_tensor(args)?)),
                    other => return Err(format!("REDUCE at byte {at} calls {other:?}, which is not a tensor rebuild")),
                }
            }
            b'.' => {
                return match stack.pop() {
                    Some(Value::Tensor(t)) => Ok(t),
                    Some(other) => Err(format!("the pickle holds {}, not a bare tensor", describe(&other))),
                    None => Err("the pickle is empty".into()),
                };
            }
            other => {
                return Err(format!(
                    "unsupported pickle opcode 0x{other:02x} at byte {at} (not part of a bare tensor's pickle)"
                ))
            }
        }
    }
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Dict => "a dict (a state_dict or checkpoint?)",
        Value::List => "a list",
        Value::Tuple(_) => "a tuple",
        _ => "a non-tensor value",
    }
}

fn as_usize(v: &Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        other => Err(format!(
            "{what} is {other:?}, expected a non-negative integer"
        )),
    }
}

fn persistent_storage(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else {
        return Err("persistent id is not a tuple".into());
    };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(Global::Storage(dtype)), Value::Str(key), Value::Str(_location), numel]
            if tag == "storage" =>
        {
            if key.is_empty() || key.contains(['/', '\\']) || key.contains("..") {
                return Err(format!("storage key `{key}` is not a plain name"));
            }
            Ok(Value::Storage {
                dtype: *dtype,
                key: key.clone(),
                numel: as_usize(numel, "storage size")?,
            })
        }
        _ => Err(format!(
            "persistent id {items:?} is not a torch storage reference"
        )),
    }
}

fn rebuild_tensor(args: Vec<Value>) -> Result<TensorHeader, String> {
    let ints = |v: &Value, what: &str| -> Result<Vec<usize>, String> {
        match v {
            Value::Tuple(items) => items.iter().map(|i| as_usize(i, what)).collect(),
            other => Err(format!("{what} is {other:?}, expected a tuple")),
        }
    };
    match args.as_slice() {
        [Value::Storage { dtype, key, numel }, offset, size, stride, ..] => Ok(TensorHeader {
            dtype: *dtype,
            storage_key: key.clone(),
            storage_numel: *numel,
            offset: as_usize(offset, "storage offset")?,
            shape: ints(size, "size")?,
            stride: ints(stride, "stride")?,
        }),
        _ => {
            Err("_rebuild_tensor_v2 arguments are not (storage, offset, size, stride, ...)".into())
        }
    }
}

/// The pickle `torch.save` writes for a contiguous tensor with storage `0`.
fn tensor_pickle(dtype_storage: &str, shape: &[usize]) -> Vec<u8> {
    fn int(p: &mut Vec<u8>, v: usize) {
        // Same encoding choice as CPython's pickler: smallest that fits.
        if v < 256 {
            p.extend([b'K', v as u8]);
        } else if v < 65536 {
            p.push(b'M');
            p.extend((v as u16).to_le_bytes());
        } else if v <= i32::MAX as usize {
            p.push(b'J');
            p.extend((v as i32).to_le_bytes());
        } else {
            p.extend([0x8a, 8]);
            p.extend((v as u64).to_le_bytes());
        }
    }
    fn string(p: &mut Vec<u8>, s: &str) {
        p.push(b'X');
        p.extend((s.len() as u32).to_le_bytes());
        p.extend(s.as_bytes());
    }
    fn tuple(p: &mut Vec<u8>, items: &[usize]) {
        match items.len() {
            0 => p.push(b')'),
            1..=3 => {
                items.iter().for_each(|&v| int(p, v));
                p.push(0x84 + items.len() as u8);
            }
            _ => {
                p.push(b'(');
                items.iter().for_each(|&v| int(p, v));
                p.push(b't');
            }
        }
    }
    let numel: usize = shape.iter().product();
    let mut p = vec![0x80, 2];
    p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n");
    p.extend(b"((");
    string(&mut p, "storage");
    p.extend(format!("ctorch\n{dtype_storage}\n").as_bytes());
    string(&mut p, "0");
    string(&mut p, "cpu");
    int(&mut p, numel);
    p.extend(b"tQ");
    int(&mut p, 0);
    tuple(&mut p, shape);
    tuple(&mut p, &contiguous_stride(shape));
    p.push(0x89);
    p.extend(b"ccollections\nOrderedDict\n)R");
    p.extend(b"tR.");
    p
}

/// Write `data` (C-contiguous, `shape`) as a float32 `.pt` file that Python's
/// `torch.load` reads, laid out as `torch.save` lays it out (storage 64-byte
/// aligned, fixed timestamps so the same tensor gives the same bytes).
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), PtError> {
    let numel: usize = shape.iter().product();
    if numel != data.len() {
        return Err(err(
            path,
            format!(
                "bug: shape {shape:?} holds {numel} values, got {}",
                data.len()
            ),
        ));
    }
    let file = File::create(path).map_err(|e| err(path, format!("cannot create: {e}")))?;
    let mut zip = zip::ZipWriter::new(BufWriter::with_capacity(1 << 20, file));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default());
    let mut bytes = Vec::with_capacity(data.len() * 4);
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let entries: [(&str, &[u8], u16); 6] = [
        ("archive/data.pkl", &tensor_pickle("FloatStorage", shape), 1),
        ("archive/.format_version", b"1", 1),
        ("archive/.storage_alignment", b"64", 1),
        ("archive/byteorder", b"little", 1),
        ("archive/data/0", &bytes, 64),
        ("archive/version", b"3\n", 1),
    ];
    for (name, content, align) in entries {
        zip.start_file(name, opts.with_alignment(align))
            .and_then(|_| zip.write_all(content).map_err(Into::into))
            .map_err(|e| err(path, format!("cannot write entry `{name}`: {e}")))?;
    }
    let mut inner = zip
        .finish()
        .map_err(|e| err(path, format!("cannot finish the zip: {e}")))?;
    inner
        .flush()
        .map_err(|e| err(path, format!("cannot write: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_small_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.pt");
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
        write_f32(&p, &[1, 2, 3, 4], &data).unwrap();
        assert_eq!(read_f32(&p, &[1, 2, 3, 4]).unwrap(), data);
        let e = read_f32(&p, &[1, 2, 12]).unwrap_err().to_string();
        assert!(e.contains("shape [1, 2, 3, 4], expected [1, 2, 12]"), "{e}");
    }

    #[test]
    fn a_box_is_what_cutting_the_whole_tensor_gives() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.pt");
        let shape = [1, 7, 6, 5];
        let data: Vec<f32> = (0..210).map(|i| i as f32 * 0.25 - 3.0).collect();
        write_f32(&p, &shape, &data).unwrap();
        let at = |x: usize, y: usize, z: usize| data[(x * 6 + y) * 5 + z];
        let bx = [[0, 1], [2, 5], [1, 6], [0, 3]];
        let mut expected = Vec::new();
        for x in 2..5 {
            for y in 1..6 {
                for z in 0..3 {
                    expected.push(at(x, y, z));
                }
            }
        }
        assert_eq!(read_f32_box(&p, &shape, &bx).unwrap(), expected);
        let whole = [[0, 1], [0, 7], [0, 6], [0, 5]];
        assert_eq!(read_f32_box(&p, &shape, &whole).unwrap(), data);
        assert_eq!(cut_box(&data, &shape, &bx), expected);
        assert!(read_f32_box(&p, &shape, &[[0, 1], [0, 8], [0, 6], [0, 5]])
            .unwrap_err()
            .to_string()
            .contains("not a non-empty box"));
        // One flipped byte in the storage is caught by the CRC-32, as read_f32 catches it.
        let mut bytes = std::fs::read(&p).unwrap();
        let marker = bytes
            .windows(4)
            .position(|w| w == (-3.0f32).to_le_bytes())
            .unwrap();
        bytes[marker + 100] ^= 0x40;
        std::fs::write(&p, &bytes).unwrap();
        let e = read_f32_box(&p, &shape, &bx).unwrap_err().to_string();
        assert!(e.contains("CRC-32") && e.contains("data/0"), "{e}");
        assert!(read_f32(&p, &shape).is_err());
        // Cut short: the central directory is gone, as for read_f32.
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        assert!(read_f32_box(&p, &shape, &bx).is_err());
    }

    #[test]
    fn pickle_we_write_parses_like_torch_writes_it() {
        // The bytes torch 2.11 writes for torch.arange(6.).reshape(1,2,3) (pickletools dump).
        let h = parse_tensor_pickle(&tensor_pickle("FloatStorage", &[1, 2, 3])).unwrap();
        assert_eq!(h.shape, vec![1, 2, 3]);
        assert_eq!(h.stride, vec![6, 3, 1]);
        assert_eq!(h.storage_numel, 6);
        assert_eq!(h.dtype, DType::F32);
    }

    #[test]
    fn refuses_foreign_global() {
        // A classic malicious pickle: os.system('echo pwned').
        let mut p = vec![0x80, 2];
        p.extend(b"cos\nsystem\nX\x0a\x00\x00\x00echo pwnedq\x00\x85R.");
        let e = parse_tensor_pickle(&p).unwrap_err();
        assert!(e.contains("`os.system`") && e.contains("refused"), "{e}");
        let mut p = vec![0x80, 4];
        p.extend(b"\x8c\x08builtins\x8c\x04eval\x93.");
        assert!(parse_tensor_pickle(&p)
            .unwrap_err()
            .contains("`builtins.eval`"));
    }

    #[test]
    fn refuses_foreign_global_inside_a_pt_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("evil.pt");
        let mut zip = zip::ZipWriter::new(File::create(&p).unwrap());
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data.pkl", o).unwrap();
        zip.write_all(b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00ls\x85R.")
            .unwrap();
        zip.finish().unwrap();
        let e = read_f32(&p, &[1]).unwrap_err().to_string();
        assert!(e.contains("evil.pt") && e.contains("`posix.system`"), "{e}");
    }

    #[test]
    fn refuses_truncated_and_wrong_dtype_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.pt");
        write_f32(&p, &[4, 4], &[1.0; 16]).unwrap();
        let full = std::fs::read(&p).unwrap();
        for cut in [3, 100, full.len() / 2, full.len() - 10] {
            let q = dir.path().join(format!("cut{cut}.pt"));
            std::fs::write(&q, &full[..cut]).unwrap();
            let e = read_f32(&q, &[4, 4]).unwrap_err().to_string();
            assert!(e.contains(&format!("cut{cut}.pt")), "{e}");
        }
        // Corrupt one storage byte: the CRC check catches it.
        let mut bad = full.clone();
        let at = bad
            .windows(4)
            .position(|w| w == 1.0f32.to_le_bytes())
            .unwrap();
        bad[at] ^= 0xff;
        let q = dir.path().join("flip.pt");
        std::fs::write(&q, &bad).unwrap();
        assert!(read_f32(&q, &[4, 4]).is_err());
        // A double tensor is refused by dtype.
        let h = parse_tensor_pickle(&tensor_pickle("DoubleStorage", &[2])).unwrap();
        assert_eq!(h.dtype, DType::F64);
        let legacy = dir.path().join("legacy.pt");
        std::fs::write(&legacy, b"\x80\x02\x8a\x0alegacy").unwrap();
        assert!(read_f32(&legacy, &[1])
            .unwrap_err()
            .to_string()
            .contains("legacy"));
    }
}
