//! Where MST nodes, commits and records are looked up by CID.

use crate::car::{self, CarReader};
use butterfly_data::Cid;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};

/// A source of blocks by CID. A missing block is `Ok(None)`: partial repos and proofs are normal.
pub trait BlockSource {
    /// The bytes of `cid`, if this source holds them.
    fn get_block(&mut self, cid: &Cid) -> Result<Option<Cow<'_, [u8]>>, car::Error>;
}

/// A block source shared through a `RefCell`, so that an MST walk can hold it while its caller reads
/// records from the same source. Each block is copied out, so the borrow ends at once.
pub struct SharedSource<'a, S>(pub &'a std::cell::RefCell<S>);

impl<S: BlockSource> BlockSource for SharedSource<'_, S> {
    fn get_block(&mut self, cid: &Cid) -> Result<Option<Cow<'_, [u8]>>, car::Error> {
        Ok(self
            .0
            .borrow_mut()
            .get_block(cid)?
            .map(|bytes| Cow::Owned(bytes.into_owned())))
    }
}

/// A CAR held whole in one buffer and indexed in place: a firehose commit's slice, with no copy
/// per block. Every block's hash is checked when it is parsed.
#[derive(Clone, Debug)]
pub struct CarSlice {
    bytes: Vec<u8>,
    header: car::CarHeader,
    index: std::collections::HashMap<Cid, std::ops::Range<usize>>,
    n_blocks: usize,
}

impl CarSlice {
    /// Parses and indexes `bytes` (a whole CAR), keeping them.
    pub fn parse(bytes: Vec<u8>, limits: car::CarLimits) -> Result<CarSlice, car::Error> {
        let (header, blocks) = car::index_in_memory(&bytes, &limits)?;
        let n_blocks = blocks.len();
        Ok(CarSlice {
            header,
            index: blocks.into_iter().collect(),
            n_blocks,
            bytes,
        })
    }

    /// The CAR's header.
    pub fn header(&self) -> &car::CarHeader {
        &self.header
    }

    /// The bytes of `cid`, if present.
    pub fn get(&self, cid: &Cid) -> Option<&[u8]> {
        self.index.get(cid).map(|range| &self.bytes[range.clone()])
    }

    /// True if the block is present.
    pub fn contains(&self, cid: &Cid) -> bool {
        self.index.contains_key(cid)
    }

    /// Blocks in the CAR, duplicates included.
    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    /// The whole CAR as given.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Every distinct block, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Cid, &[u8])> {
        self.index
            .iter()
            .map(|(cid, range)| (cid, &self.bytes[range.clone()]))
    }
}

impl BlockSource for CarSlice {
    fn get_block(&mut self, cid: &Cid) -> Result<Option<Cow<'_, [u8]>>, car::Error> {
        Ok(self.get(cid).map(Cow::Borrowed))
    }
}

/// Blocks held in memory: commit slices from the firehose, small repos, tests.
#[derive(Clone, Debug, Default)]
pub struct BlockMap {
    blocks: HashMap<Cid, Vec<u8>>,
}

impl BlockMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a block; the caller vouches that `data` hashes to `cid` (the CAR readers check it).
    pub fn insert(&mut self, cid: Cid, data: Vec<u8>) {
        self.blocks.insert(cid, data);
    }

    /// Reads a whole CAR into memory. Only for inputs already bounded in size, such as a commit slice.
    pub fn from_car<R: Read>(
        reader: CarReader<R>,
    ) -> Result<(crate::car::CarHeader, BlockMap), car::Error> {
        let header = reader.header().clone();
        let mut map = BlockMap::new();
        for block in reader {
            let block = block?;
            map.insert(block.cid, block.data);
        }
        Ok((header, map))
    }

    /// The bytes of `cid`, if present.
    pub fn get(&self, cid: &Cid) -> Option<&[u8]> {
        self.blocks.get(cid).map(Vec::as_slice)
    }

    /// True if the block is present.
    pub fn contains(&self, cid: &Cid) -> bool {
        self.blocks.contains_key(cid)
    }

    /// Number of distinct blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// True if there are no blocks.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Keeps only the blocks whose CIDs are in `keep`.
    pub fn retain(&mut self, keep: &HashSet<Cid>) {
        self.blocks.retain(|cid, _| keep.contains(cid));
    }

    /// Iterates over the blocks in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Cid, &[u8])> {
        self.blocks.iter().map(|(cid, data)| (cid, data.as_slice()))
    }
}

impl BlockSource for BlockMap {
    fn get_block(&mut self, cid: &Cid) -> Result<Option<Cow<'_, [u8]>>, car::Error> {
        Ok(self.get(cid).map(Cow::Borrowed))
    }
}

impl Extend<(Cid, Vec<u8>)> for BlockMap {
    fn extend<T: IntoIterator<Item = (Cid, Vec<u8>)>>(&mut self, iter: T) {
        self.blocks.extend(iter);
    }
}

/// Wraps a source and remembers every CID asked for: how the simulator finds the blocks a sync 1.1
/// proof must carry.
pub struct RecordingSource<'a, S> {
    inner: &'a mut S,
    /// Every CID requested, found or not.
    pub requested: HashSet<Cid>,
}

impl<'a, S: BlockSource> RecordingSource<'a, S> {
    /// Starts recording requests to `inner`.
    pub fn new(inner: &'a mut S) -> Self {
        RecordingSource {
            inner,
            requested: HashSet::new(),
        }
    }
}

impl<S: BlockSource> BlockSource for RecordingSource<'_, S> {
    fn get_block(&mut self, cid: &Cid) -> Result<Option<Cow<'_, [u8]>>, car::Error> {
        self.requested.insert(*cid);
        self.inner.get_block(cid)
    }
}

/// Where one block sits in a CAR: found by a first streaming pass, read back on demand.
#[derive(Clone, Copy, Debug)]
struct IndexEntry {
    /// SHA-256 digest and codec of the CID, which together identify an atproto block. The codec is
    /// dag-cbor or raw (the CAR reader refuses others), so a byte holds it: 48 bytes an entry, not 56.
    digest: [u8; 32],
    codec: u8,
    offset: u64,
    len: u32,
}

/// A CAR on a seekable reader, indexed by one streaming pass, so that the MST can be walked in key
/// order without holding the repo in memory: 48 bytes of index per block.
///
/// Blocks read back are not hashed a second time: the reader is trusted not to change between the
/// indexing pass and the reads (a local file, not a network stream).
pub struct IndexedCar<R> {
    reader: R,
    header: car::CarHeader,
    index: Vec<IndexEntry>,
    n_blocks: u64,
    buffer: Vec<u8>,
}

impl<R: Read + Seek> IndexedCar<R> {
    /// Streams the whole CAR once, verifying every block's hash and noting where it is.
    pub fn build(mut reader: R, limits: car::CarLimits) -> Result<Self, car::Error> {
        reader
            .seek(SeekFrom::Start(0))
            .map_err(|source| car::Error::Io { offset: 0, source })?;
        // The index keeps lengths as u32, so a larger block could not be read back whole.
        let limits = car::CarLimits {
            max_block_len: limits.max_block_len.min(u32::MAX as usize),
            ..limits
        };
        let buffered = std::io::BufReader::with_capacity(256 * 1024, &mut reader);
        let mut car_reader = CarReader::with_limits(buffered, limits)?;
        let header = car_reader.header().clone();
        let mut index = Vec::new();
        let mut n_blocks = 0;
        while let Some(block) = car_reader.next_block()? {
            n_blocks += 1;
            let end = car_reader.offset();
            let mut digest = [0u8; 32];
            digest.copy_from_slice(block.cid.hash().digest());
            index.push(IndexEntry {
                codec: block.cid.codec() as u8,
                digest,
                offset: end - block.data.len() as u64,
                len: block.data.len() as u32,
            });
        }
        drop(car_reader);
        index.sort_unstable_by_key(|entry| (entry.digest, entry.codec));
        index.dedup_by(|a, b| a.digest == b.digest && a.codec == b.codec);
        index.shrink_to_fit();
        Ok(IndexedCar {
            reader,
            header,
            index,
            n_blocks,
            buffer: Vec::new(),
        })
    }

    /// The CAR's header.
    pub fn header(&self) -> &car::CarHeader {
        &self.header
    }

    /// Blocks in the file, duplicates included.
    pub fn n_blocks(&self) -> u64 {
        self.n_blocks
    }

    /// True if the CAR holds `cid`, without reading it.
    pub fn contains(&self, cid: &Cid) -> bool {
        self.find(cid).is_some()
    }

    fn find(&self, cid: &Cid) -> Option<IndexEntry> {
        let digest = cid.hash().digest();
        let codec = u8::try_from(cid.codec()).ok()?;
        if digest.len() != 32 {
            return None;
        }
        let key = (digest, codec);
        self.index
            .binary_search_by(|entry| (entry.digest.as_slice(), entry.codec).cmp(&key))
            .ok()
            .map(|i| self.index[i])
    }
}

impl<R: Read + Seek> BlockSource for IndexedCar<R> {
    fn get_block(&mut self, cid: &Cid) -> Result<Option<Cow<'_, [u8]>>, car::Error> {
        let Some(entry) = self.find(cid) else {
            return Ok(None);
        };
        let io = |source| car::Error::Io {
            offset: entry.offset,
            source,
        };
        self.reader
            .seek(SeekFrom::Start(entry.offset))
            .map_err(io)?;
        self.buffer.resize(entry.len as usize, 0);
        self.reader.read_exact(&mut self.buffer).map_err(io)?;
        Ok(Some(Cow::Borrowed(&self.buffer)))
    }
}
