//! CAR v1: the archive format that carries repos (`getRepo`) and commit slices (the firehose).
//!
//! A CAR is a varint-prefixed DAG-CBOR header `{version: 1, roots: [CID]}` followed by varint-prefixed
//! blocks, each a binary CID and the block's bytes. [`CarReader`] and [`AsyncCarReader`] read one block
//! at a time from any reader, so a repo of any size streams through in bounded memory; every block's
//! hash is checked against its CID before it is handed out. Duplicate and unreachable blocks are legal
//! and passed through; whether referenced blocks are missing is a question for the MST walk, which
//! reports them. [`CarWriter`] writes the same format.
//!
//! Spec: <https://ipld.io/specs/transport/car/carv1/>, <https://atproto.com/specs/repository#car-file-serialization>.

use butterfly_data::cbor::{Decoder, Encoder};
use butterfly_data::{Cid, DAG_CBOR, RAW, SHA2_256};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bounds on what a CAR from the network may claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CarLimits {
    /// Largest header accepted, in bytes.
    pub max_header_len: usize,
    /// Largest block (CID plus data) accepted, in bytes.
    pub max_block_len: usize,
}

impl Default for CarLimits {
    fn default() -> Self {
        // atproto caps records well below 1 MiB and commit slices at 2,000,000 bytes in all; a block
        // over 2 MiB is not something a PDS produces.
        CarLimits {
            max_header_len: 64 * 1024,
            max_block_len: 2 * 1024 * 1024,
        }
    }
}

/// Why a CAR could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The underlying reader or writer failed.
    #[error("car i/o at byte {offset}: {source}")]
    Io {
        /// Bytes of the CAR consumed before the failure.
        offset: u64,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The input ended inside the header or a block.
    #[error("car truncated at byte {offset}: {what} is incomplete")]
    Truncated {
        /// Bytes of the CAR consumed before the end.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// The header is not a CAR v1 header.
    #[error("car header: {0}")]
    BadHeader(String),
    /// A length prefix or CID is malformed, or exceeds [`CarLimits`].
    #[error("car block at byte {offset}: {message}")]
    BadBlock {
        /// Offset of the block's length prefix.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// A block's bytes do not hash to its CID.
    #[error("car block {cid} at byte {offset}: bytes do not match the CID's hash")]
    HashMismatch {
        /// The CID the block claimed.
        cid: Cid,
        /// Offset of the block's length prefix.
        offset: u64,
    },
}

/// The CAR header: the roots it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarHeader {
    /// The roots; a repo CAR has one, the signed commit.
    pub roots: Vec<Cid>,
}

/// One block: a CID and the bytes it names, already checked against each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The block's CID.
    pub cid: Cid,
    /// The block's bytes.
    pub data: Vec<u8>,
}

/// Checks a block's bytes against its CID. Only SHA-256 is used in atproto; other hashes are refused.
pub fn verify_block(cid: &Cid, data: &[u8]) -> Result<(), String> {
    check_cid(cid)?;
    if !digest_matches(cid, data) {
        return Err("hash mismatch".into());
    }
    Ok(())
}

/// Checks that a CID is one atproto uses: SHA-256, and the dag-cbor or raw codec.
fn check_cid(cid: &Cid) -> Result<(), String> {
    let hash = cid.hash();
    if hash.code() != SHA2_256 || hash.size() != 32 {
        return Err(format!(
            "unsupported multihash 0x{:x} of {} bytes (atproto uses sha-256)",
            hash.code(),
            hash.size()
        ));
    }
    if cid.codec() != DAG_CBOR && cid.codec() != RAW {
        return Err(format!(
            "unsupported codec 0x{:x} (atproto uses dag-cbor and raw)",
            cid.codec()
        ));
    }
    Ok(())
}

/// True if `data` hashes to the digest of `cid`, which [`check_cid`] has passed.
fn digest_matches(cid: &Cid, data: &[u8]) -> bool {
    Sha256::digest(data)[..] == *cid.hash().digest()
}

/// Decodes a CAR v1 header body.
fn parse_header(bytes: &[u8]) -> Result<CarHeader, Error> {
    let bad = |e: butterfly_data::Error| Error::BadHeader(e.to_string());
    let mut decoder = Decoder::new(bytes);
    let n_fields = decoder.read_map_len().map_err(bad)?;
    let mut version = None;
    let mut roots = None;
    let mut previous = None;
    for _ in 0..n_fields {
        let key = decoder.read_map_key(previous).map_err(bad)?;
        match key {
            "roots" => {
                let n_roots = decoder.read_array_len().map_err(bad)?;
                let mut list = Vec::with_capacity(n_roots);
                for _ in 0..n_roots {
                    list.push(decoder.read_link().map_err(bad)?);
                }
                roots = Some(list);
            }
            "version" => version = Some(decoder.read_u64().map_err(bad)?),
            other => return Err(Error::BadHeader(format!("unexpected field {other:?}"))),
        }
        previous = Some(key);
    }
    decoder.finish().map_err(bad)?;
    match (version, roots) {
        (Some(1), Some(roots)) => Ok(CarHeader { roots }),
        (Some(v), _) if v != 1 => Err(Error::BadHeader(format!(
            "version {v} is not supported (expected 1)"
        ))),
        _ => Err(Error::BadHeader("needs both version and roots".into())),
    }
}

/// Encodes a CAR v1 header body.
fn encode_header(roots: &[Cid]) -> Vec<u8> {
    let mut encoder = Encoder::new();
    encoder.write_map_header(2);
    encoder.write_str("roots");
    encoder.write_array_header(roots.len());
    for root in roots {
        encoder.write_link(root);
    }
    encoder.write_str("version");
    encoder.write_u64(1);
    encoder.into_bytes()
}

// The reading core. Both readers parse the same way and differ only in how they call `read`, so
// everything that decides what bytes mean is here, as plain functions on bytes already read; the
// readers' own loops (`fill`, `read_varint` and their async twins) only move bytes and offsets.

/// What a length prefix said.
enum Varint {
    Value(u64),
    /// The input ended before the first byte: a clean end of the CAR.
    End,
}

/// Accumulates one unsigned LEB128 varint byte by byte.
struct VarintState {
    /// Offset of the prefix's first byte, for errors.
    start: u64,
    value: u64,
    shift: u32,
    n_bytes: usize,
}

impl VarintState {
    fn new(start: u64) -> Self {
        VarintState {
            start,
            value: 0,
            shift: 0,
            n_bytes: 0,
        }
    }

    /// Feeds the next byte, or `None` where the input ended (`offset`); returns the prefix when it
    /// is complete.
    #[inline] // called per byte from the readers' generic code, which other crates instantiate
    fn push(&mut self, byte: Option<u8>, offset: u64) -> Result<Option<Varint>, Error> {
        let Some(byte) = byte else {
            if self.n_bytes == 0 {
                return Ok(Some(Varint::End));
            }
            return Err(Error::Truncated {
                offset,
                what: "length prefix",
            });
        };
        let bad = |message: &str| Error::BadBlock {
            offset: self.start,
            message: message.into(),
        };
        if self.n_bytes == 9 {
            return Err(bad("length varint longer than 9 bytes"));
        }
        self.value |= u64::from(byte & 0x7f) << self.shift;
        self.shift += 7;
        self.n_bytes += 1;
        if byte & 0x80 != 0 {
            return Ok(None);
        }
        if byte == 0 && self.n_bytes > 1 {
            return Err(bad("length varint is not minimally encoded"));
        }
        Ok(Some(Varint::Value(self.value)))
    }
}

fn check_len(len: u64, max: usize, offset: u64, what: &str) -> Result<usize, Error> {
    if len == 0 {
        return Err(Error::BadBlock {
            offset,
            message: format!("{what} has length 0"),
        });
    }
    if len > max as u64 {
        return Err(Error::BadBlock {
            offset,
            message: format!("{what} of {len} bytes exceeds the limit of {max}"),
        });
    }
    Ok(len as usize)
}

/// The header's length from its prefix: the CAR may not end before its header.
fn header_len(prefix: Varint, limits: &CarLimits) -> Result<usize, Error> {
    match prefix {
        Varint::Value(len) => check_len(len, limits.max_header_len, 0, "header"),
        Varint::End => Err(Error::Truncated {
            offset: 0,
            what: "header",
        }),
    }
}

/// A block's length from its prefix at `offset`; `None` at a clean end of the CAR.
fn block_len(prefix: Varint, limits: &CarLimits, offset: u64) -> Result<Option<usize>, Error> {
    match prefix {
        Varint::Value(len) => check_len(len, limits.max_block_len, offset, "block").map(Some),
        Varint::End => Ok(None),
    }
}

/// Fails with `Truncated` unless a read of `len` bytes got them all.
fn check_filled(n_read: usize, len: usize, offset: u64, what: &'static str) -> Result<(), Error> {
    if n_read < len {
        return Err(Error::Truncated { offset, what });
    }
    Ok(())
}

/// Splits a block section (CID, then data) that started at `offset` and checks one against the
/// other; returns the CID and the length of its encoding, where the data starts.
fn split_block(section: &[u8], offset: u64) -> Result<(Cid, usize), Error> {
    let bad = |message: String| Error::BadBlock { offset, message };
    let mut rest = section;
    let cid = Cid::read_bytes(&mut rest).map_err(|e| bad(format!("invalid CID: {e}")))?;
    check_cid(&cid).map_err(|message| bad(format!("{cid}: {message}")))?;
    if !digest_matches(&cid, rest) {
        return Err(Error::HashMismatch { cid, offset });
    }
    Ok((cid, section.len() - rest.len()))
}

/// [`split_block`] on a section read into its own buffer, which becomes the block's data.
fn parse_block(mut section: Vec<u8>, offset: u64) -> Result<Block, Error> {
    let (cid, cid_len) = split_block(&section, offset)?;
    section.drain(..cid_len);
    Ok(Block { cid, data: section })
}

/// Folds the result of one `read` call into `filled` and `offset`; true when the input has ended.
#[inline] // called per length-prefix byte from the readers' generic code, as `VarintState::push` is
fn advance(
    result: std::io::Result<usize>,
    filled: &mut usize,
    offset: &mut u64,
) -> Result<bool, Error> {
    match result {
        Ok(0) => Ok(true),
        Ok(n) => {
            *filled += n;
            *offset += n as u64;
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(false),
        Err(source) => Err(Error::Io {
            offset: *offset,
            source,
        }),
    }
}

/// Where each block's data lies in a CAR held in memory.
pub(crate) type BlockRanges = Vec<(Cid, std::ops::Range<usize>)>;

/// Indexes a CAR held whole in memory without copying it: the header, then each block's CID and the
/// range of its data in `bytes`, every block's hash checked. The same checks as [`CarReader`].
pub(crate) fn index_in_memory(
    bytes: &[u8],
    limits: &CarLimits,
) -> Result<(CarHeader, BlockRanges), Error> {
    // Length prefixes go through the streaming reader's own varint loop (a byte slice is a `Read`);
    // `offset` is then the position in `bytes`.
    let mut offset = 0u64;
    let section = |len: usize, offset: &mut u64, what: &'static str| {
        let start = *offset as usize;
        let bytes = bytes.get(start..start + len).ok_or(Error::Truncated {
            offset: bytes.len() as u64,
            what,
        })?;
        *offset += len as u64;
        Ok::<_, Error>((start, bytes))
    };
    let prefix = read_varint(&mut &bytes[..], &mut offset)?;
    let (_, header_bytes) = section(header_len(prefix, limits)?, &mut offset, "header")?;
    let header = parse_header(header_bytes)?;
    let mut blocks = Vec::new();
    loop {
        let block_start = offset;
        let prefix = read_varint(&mut &bytes[offset as usize..], &mut offset)?;
        let Some(len) = block_len(prefix, limits, block_start)? else {
            return Ok((header, blocks));
        };
        let (start, block) = section(len, &mut offset, "block")?;
        let (cid, cid_len) = split_block(block, block_start)?;
        blocks.push((cid, start + cid_len..start + len));
    }
}

/// Reads a CAR v1 block by block from any [`Read`], checking every block's hash.
///
/// Memory use is one block at a time. Wrap unbuffered readers (files, sockets) in a
/// [`std::io::BufReader`]: length prefixes are read a byte at a time.
pub struct CarReader<R> {
    reader: R,
    header: CarHeader,
    limits: CarLimits,
    offset: u64,
}

impl<R: Read> CarReader<R> {
    /// Reads and checks the header with default [`CarLimits`].
    pub fn new(reader: R) -> Result<Self, Error> {
        Self::with_limits(reader, CarLimits::default())
    }

    /// Reads and checks the header.
    pub fn with_limits(mut reader: R, limits: CarLimits) -> Result<Self, Error> {
        let mut offset = 0;
        let prefix = read_varint(&mut reader, &mut offset)?;
        let mut bytes = vec![0; header_len(prefix, &limits)?];
        let n_read = fill(&mut reader, &mut bytes, &mut offset)?;
        check_filled(n_read, bytes.len(), offset, "header")?;
        let header = parse_header(&bytes)?;
        Ok(CarReader {
            reader,
            header,
            limits,
            offset,
        })
    }

    /// The header read at construction.
    pub fn header(&self) -> &CarHeader {
        &self.header
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next block, `None` at a clean end of input, or an error for a bad or truncated block.
    pub fn next_block(&mut self) -> Result<Option<Block>, Error> {
        let start = self.offset;
        let prefix = read_varint(&mut self.reader, &mut self.offset)?;
        let Some(len) = block_len(prefix, &self.limits, start)? else {
            return Ok(None);
        };
        let mut section = vec![0; len];
        let n_read = fill(&mut self.reader, &mut section, &mut self.offset)?;
        check_filled(n_read, len, self.offset, "block")?;
        parse_block(section, start).map(Some)
    }

    /// Gives back the underlying reader.
    pub fn into_inner(self) -> R {
        self.reader
    }
}

impl<R: Read> Iterator for CarReader<R> {
    type Item = Result<Block, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_block().transpose()
    }
}

/// Reads until `buf` is full or the input ends; returns the number of bytes read.
fn fill<R: Read>(reader: &mut R, buf: &mut [u8], offset: &mut u64) -> Result<usize, Error> {
    let mut filled = 0;
    while filled < buf.len() && !advance(reader.read(&mut buf[filled..]), &mut filled, offset)? {}
    Ok(filled)
}

fn read_varint<R: Read>(reader: &mut R, offset: &mut u64) -> Result<Varint, Error> {
    let mut prefix = VarintState::new(*offset);
    loop {
        let mut byte = [0u8];
        let n_read = fill(reader, &mut byte, offset)?;
        if let Some(varint) = prefix.push((n_read == 1).then_some(byte[0]), *offset)? {
            return Ok(varint);
        }
    }
}

/// The asynchronous twin of [`CarReader`], for response bodies such as `getRepo`.
pub struct AsyncCarReader<R> {
    reader: R,
    header: CarHeader,
    limits: CarLimits,
    offset: u64,
}

impl<R: AsyncRead + Unpin> AsyncCarReader<R> {
    /// Reads and checks the header with default [`CarLimits`].
    pub async fn new(reader: R) -> Result<Self, Error> {
        Self::with_limits(reader, CarLimits::default()).await
    }

    /// Reads and checks the header.
    pub async fn with_limits(mut reader: R, limits: CarLimits) -> Result<Self, Error> {
        let mut offset = 0;
        let prefix = read_varint_async(&mut reader, &mut offset).await?;
        let mut bytes = vec![0; header_len(prefix, &limits)?];
        let n_read = fill_async(&mut reader, &mut bytes, &mut offset).await?;
        check_filled(n_read, bytes.len(), offset, "header")?;
        let header = parse_header(&bytes)?;
        Ok(AsyncCarReader {
            reader,
            header,
            limits,
            offset,
        })
    }

    /// The header read at construction.
    pub fn header(&self) -> &CarHeader {
        &self.header
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next block, `None` at a clean end of input. Cancel-safe only between blocks: dropping the
    /// future mid-block leaves the reader in the middle of a block.
    pub async fn next_block(&mut self) -> Result<Option<Block>, Error> {
        let start = self.offset;
        let prefix = read_varint_async(&mut self.reader, &mut self.offset).await?;
        let Some(len) = block_len(prefix, &self.limits, start)? else {
            return Ok(None);
        };
        let mut section = vec![0; len];
        let n_read = fill_async(&mut self.reader, &mut section, &mut self.offset).await?;
        check_filled(n_read, len, self.offset, "block")?;
        parse_block(section, start).map(Some)
    }
}

async fn fill_async<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
    offset: &mut u64,
) -> Result<usize, Error> {
    let mut filled = 0;
    while filled < buf.len()
        && !advance(reader.read(&mut buf[filled..]).await, &mut filled, offset)?
    {}
    Ok(filled)
}

async fn read_varint_async<R: AsyncRead + Unpin>(
    reader: &mut R,
    offset: &mut u64,
) -> Result<Varint, Error> {
    let mut prefix = VarintState::new(*offset);
    loop {
        let mut byte = [0u8];
        let n_read = fill_async(reader, &mut byte, offset).await?;
        if let Some(varint) = prefix.push((n_read == 1).then_some(byte[0]), *offset)? {
            return Ok(varint);
        }
    }
}

/// Writes a CAR v1 to any [`Write`].
pub struct CarWriter<W> {
    writer: W,
    offset: u64,
}

impl<W: Write> CarWriter<W> {
    /// Writes the header naming `roots`.
    pub fn new(mut writer: W, roots: &[Cid]) -> Result<Self, Error> {
        let header = encode_header(roots);
        let mut offset = 0;
        write_section(&mut writer, &[&header], &mut offset)?;
        Ok(CarWriter { writer, offset })
    }

    /// Appends one block. The caller vouches that `data` hashes to `cid`.
    pub fn write_block(&mut self, cid: &Cid, data: &[u8]) -> Result<(), Error> {
        let cid_bytes = cid.to_bytes();
        write_section(&mut self.writer, &[&cid_bytes, data], &mut self.offset)
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Flushes and gives back the writer.
    pub fn finish(mut self) -> Result<W, Error> {
        self.writer.flush().map_err(|source| Error::Io {
            offset: self.offset,
            source,
        })?;
        Ok(self.writer)
    }
}

fn write_section<W: Write>(writer: &mut W, parts: &[&[u8]], offset: &mut u64) -> Result<(), Error> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut prefix = Vec::with_capacity(10);
    encode_varint(len as u64, &mut prefix);
    let io = |source, offset: &u64| Error::Io {
        offset: *offset,
        source,
    };
    writer.write_all(&prefix).map_err(|e| io(e, offset))?;
    for part in parts {
        writer.write_all(part).map_err(|e| io(e, offset))?;
    }
    *offset += (prefix.len() + len) as u64;
    Ok(())
}

/// Appends `value` as an unsigned LEB128 varint.
pub fn encode_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Writes a whole CAR to a byte vector: convenient for commit slices and tests.
pub fn write_car_to_vec<'a>(
    roots: &[Cid],
    blocks: impl IntoIterator<Item = (&'a Cid, &'a [u8])>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let header = encode_header(roots);
    encode_varint(header.len() as u64, &mut out);
    out.extend_from_slice(&header);
    for (cid, data) in blocks {
        let cid_bytes = cid.to_bytes();
        encode_varint((cid_bytes.len() + data.len()) as u64, &mut out);
        out.extend_from_slice(&cid_bytes);
        out.extend_from_slice(data);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use butterfly_data::cid_for_cbor;

    fn sample() -> (Cid, Vec<u8>, Vec<u8>) {
        let data = butterfly_data::Value::Integer(7).to_cbor();
        let cid = cid_for_cbor(&data);
        let car = write_car_to_vec(&[cid], [(&cid, data.as_slice()), (&cid, data.as_slice())]);
        (cid, data, car)
    }

    #[test]
    fn round_trip_with_duplicates() {
        let (cid, data, car) = sample();
        let mut reader = CarReader::new(car.as_slice()).unwrap();
        assert_eq!(reader.header().roots, vec![cid]);
        let blocks: Vec<Block> = reader.by_ref().map(Result::unwrap).collect();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0], Block { cid, data });
        assert_eq!(reader.offset(), car.len() as u64);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let (_, data, car) = sample();
        let block_len = 1 + 36 + data.len();
        let header_end = car.len() - 2 * block_len;
        for cut in 0..car.len() {
            let result = CarReader::new(&car[..cut]).and_then(|r| r.collect::<Result<Vec<_>, _>>());
            if cut == header_end || cut == header_end + block_len {
                assert_eq!(
                    result.unwrap().len(),
                    (cut - header_end) / block_len,
                    "cut at {cut}"
                );
            } else {
                assert!(result.is_err(), "cut at {cut} was accepted");
            }
        }
    }

    #[test]
    fn corrupted_block_is_rejected() {
        let (_, _, mut car) = sample();
        let last = car.len() - 1;
        car[last] ^= 1;
        let err = CarReader::new(car.as_slice())
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
    }

    #[test]
    fn huge_length_prefix_is_rejected_before_allocating() {
        let mut car = Vec::new();
        encode_varint(u64::MAX >> 8, &mut car);
        let err = CarReader::new(car.as_slice()).err().unwrap();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
    }

    /// Reads `car` with the async reader and gives every block, or the first error as a string.
    fn read_async(car: &[u8]) -> Result<Vec<Block>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut reader = AsyncCarReader::new(car).await.map_err(|e| e.to_string())?;
            let mut blocks = Vec::new();
            while let Some(block) = reader.next_block().await.map_err(|e| e.to_string())? {
                blocks.push(block);
            }
            Ok(blocks)
        })
    }

    #[test]
    fn async_reader_fails_where_and_as_the_sync_reader_does() {
        let (_, _, mut car) = sample();
        let last = car.len() - 1;
        for cut in 0..=car.len() {
            let sync = CarReader::new(&car[..cut])
                .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .map_err(|e| e.to_string());
            assert_eq!(read_async(&car[..cut]), sync, "cut at {cut}");
        }
        car[last] ^= 1;
        let sync = CarReader::new(car.as_slice())
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .map_err(|e| e.to_string());
        assert!(
            sync.as_ref().unwrap_err().contains("do not match"),
            "{sync:?}"
        );
        assert_eq!(read_async(&car), sync);
    }

    #[test]
    fn truncation_reports_where_the_input_ended() {
        let (_, _, car) = sample();
        let cut = car.len() - 3;
        let err = CarReader::new(&car[..cut])
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert!(
            matches!(err, Error::Truncated { offset, what: "block" } if offset == cut as u64),
            "{err}"
        );
    }

    #[test]
    fn malformed_length_prefixes_are_rejected() {
        for (prefix, expected) in [
            (&[0x80, 0x00][..], "not minimally encoded"),
            (&[0xff; 10][..], "longer than 9 bytes"),
            (&[0x00][..], "length 0"),
            (&[0x85][..], "truncated"),
        ] {
            let err = CarReader::new(prefix).err().unwrap();
            assert!(err.to_string().contains(expected), "{prefix:?}: {err}");
        }
    }

    #[test]
    fn async_reader_matches_sync_reader() {
        let (_, _, car) = sample();
        let sync_blocks: Vec<Block> = CarReader::new(car.as_slice())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(read_async(&car).unwrap(), sync_blocks);
    }
}
