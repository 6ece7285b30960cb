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
    if Sha256::digest(data)[..] != *hash.digest() {
        return Err("hash mismatch".into());
    }
    Ok(())
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

/// Splits a block section into CID and data, and checks them.
fn parse_block(section: Vec<u8>, offset: u64) -> Result<Block, Error> {
    let mut rest = section.as_slice();
    let cid = Cid::read_bytes(&mut rest).map_err(|e| Error::BadBlock {
        offset,
        message: format!("invalid CID: {e}"),
    })?;
    let cid_len = section.len() - rest.len();
    verify_block(&cid, rest).map_err(|message| {
        if message == "hash mismatch" {
            Error::HashMismatch { cid, offset }
        } else {
            Error::BadBlock {
                offset,
                message: format!("{cid}: {message}"),
            }
        }
    })?;
    let mut data = section;
    data.drain(..cid_len);
    Ok(Block { cid, data })
}

/// What a varint read found.
enum Varint {
    Value(u64),
    /// The input ended before the first byte: a clean end of the CAR.
    End,
}

/// Accumulates one unsigned LEB128 varint byte by byte; shared by the sync and async readers.
#[derive(Default)]
struct VarintState {
    value: u64,
    shift: u32,
    n_bytes: usize,
}

impl VarintState {
    /// Feeds one byte; returns the value when it is complete.
    fn push(&mut self, byte: u8, offset: u64) -> Result<Option<u64>, Error> {
        if self.n_bytes == 9 {
            return Err(Error::BadBlock {
                offset,
                message: "length varint longer than 9 bytes".into(),
            });
        }
        self.value |= u64::from(byte & 0x7f) << self.shift;
        self.shift += 7;
        self.n_bytes += 1;
        if byte & 0x80 == 0 {
            if byte == 0 && self.n_bytes > 1 {
                return Err(Error::BadBlock {
                    offset,
                    message: "length varint is not minimally encoded".into(),
                });
            }
            return Ok(Some(self.value));
        }
        Ok(None)
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
        let header_len = match read_varint(&mut reader, &mut offset)? {
            Varint::Value(len) => check_len(len, limits.max_header_len, 0, "header")?,
            Varint::End => {
                return Err(Error::Truncated {
                    offset: 0,
                    what: "header",
                })
            }
        };
        let mut bytes = vec![0; header_len];
        read_exact(&mut reader, &mut bytes, &mut offset, "header")?;
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
        let len = match read_varint(&mut self.reader, &mut self.offset)? {
            Varint::Value(len) => check_len(len, self.limits.max_block_len, start, "block")?,
            Varint::End => return Ok(None),
        };
        let mut section = vec![0; len];
        read_exact(&mut self.reader, &mut section, &mut self.offset, "block")?;
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

fn read_varint<R: Read>(reader: &mut R, offset: &mut u64) -> Result<Varint, Error> {
    let mut state = VarintState::default();
    let start = *offset;
    loop {
        let mut byte = [0u8];
        match reader.read(&mut byte) {
            Ok(0) if state.n_bytes == 0 => return Ok(Varint::End),
            Ok(0) => {
                return Err(Error::Truncated {
                    offset: *offset,
                    what: "length prefix",
                })
            }
            Ok(_) => {
                *offset += 1;
                if let Some(value) = state.push(byte[0], start)? {
                    return Ok(Varint::Value(value));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(Error::Io {
                    offset: *offset,
                    source,
                })
            }
        }
    }
}

fn read_exact<R: Read>(
    reader: &mut R,
    buf: &mut [u8],
    offset: &mut u64,
    what: &'static str,
) -> Result<(), Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(Error::Truncated {
                    offset: *offset,
                    what,
                })
            }
            Ok(n) => {
                filled += n;
                *offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(Error::Io {
                    offset: *offset,
                    source,
                })
            }
        }
    }
    Ok(())
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
        let header_len = match read_varint_async(&mut reader, &mut offset).await? {
            Varint::Value(len) => check_len(len, limits.max_header_len, 0, "header")?,
            Varint::End => {
                return Err(Error::Truncated {
                    offset: 0,
                    what: "header",
                })
            }
        };
        let mut bytes = vec![0; header_len];
        read_exact_async(&mut reader, &mut bytes, &mut offset, "header").await?;
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
        let len = match read_varint_async(&mut self.reader, &mut self.offset).await? {
            Varint::Value(len) => check_len(len, self.limits.max_block_len, start, "block")?,
            Varint::End => return Ok(None),
        };
        let mut section = vec![0; len];
        read_exact_async(&mut self.reader, &mut section, &mut self.offset, "block").await?;
        parse_block(section, start).map(Some)
    }
}

async fn read_varint_async<R: AsyncRead + Unpin>(
    reader: &mut R,
    offset: &mut u64,
) -> Result<Varint, Error> {
    let mut state = VarintState::default();
    let start = *offset;
    loop {
        let mut byte = [0u8];
        match reader.read(&mut byte).await {
            Ok(0) if state.n_bytes == 0 => return Ok(Varint::End),
            Ok(0) => {
                return Err(Error::Truncated {
                    offset: *offset,
                    what: "length prefix",
                })
            }
            Ok(_) => {
                *offset += 1;
                if let Some(value) = state.push(byte[0], start)? {
                    return Ok(Varint::Value(value));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(Error::Io {
                    offset: *offset,
                    source,
                })
            }
        }
    }
}

async fn read_exact_async<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
    offset: &mut u64,
    what: &'static str,
) -> Result<(), Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]).await {
            Ok(0) => {
                return Err(Error::Truncated {
                    offset: *offset,
                    what,
                })
            }
            Ok(n) => {
                filled += n;
                *offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(Error::Io {
                    offset: *offset,
                    source,
                })
            }
        }
    }
    Ok(())
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

    #[test]
    fn async_reader_matches_sync_reader() {
        let (_, _, car) = sample();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let blocks = runtime.block_on(async {
            let mut reader = AsyncCarReader::new(car.as_slice()).await.unwrap();
            let mut blocks = Vec::new();
            while let Some(block) = reader.next_block().await.unwrap() {
                blocks.push(block);
            }
            blocks
        });
        let sync_blocks: Vec<Block> = CarReader::new(car.as_slice())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(blocks, sync_blocks);
    }
}
