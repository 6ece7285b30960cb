//! Frame logs: a file of raw WebSocket binary messages, each preceded by its length as a 4-byte
//! big-endian integer. Recording the exact bytes (not a re-encoding) keeps a log faithful to what
//! the server sent, so a replay verifies exactly as the live stream did.

use crate::message::MAX_FRAME_BYTES;
use std::io::{self, Read, Write};

/// Reads frames from a log.
#[derive(Debug)]
pub struct FrameLogReader<R> {
    reader: R,
    offset: u64,
    max_frame: usize,
}

/// Why a frame log could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading failed.
    #[error("frame log at byte {offset}: {source}")]
    Io {
        /// Offset of the frame being read.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A length prefix is over the limit: the file is corrupt or not a frame log.
    #[error("frame log at byte {offset}: frame of {len} bytes is over the {max} byte limit")]
    TooLarge {
        /// Offset of the length prefix.
        offset: u64,
        /// The length it claims.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The file ends inside a frame (a recording cut short).
    #[error("frame log at byte {offset}: truncated frame ({missing} bytes missing)")]
    Truncated {
        /// Offset of the frame's length prefix.
        offset: u64,
        /// How many bytes the frame lacks.
        missing: u64,
    },
}

impl<R: Read> FrameLogReader<R> {
    /// Reads frames of up to [`MAX_FRAME_BYTES`].
    pub fn new(reader: R) -> Self {
        FrameLogReader {
            reader,
            offset: 0,
            max_frame: MAX_FRAME_BYTES,
        }
    }

    /// Byte offset of the next frame's length prefix.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next frame, or `None` at a clean end of file.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let start = self.offset;
        let mut prefix = [0u8; 4];
        let got = read_full(&mut self.reader, &mut prefix).map_err(|source| Error::Io {
            offset: start,
            source,
        })?;
        if got == 0 {
            return Ok(None);
        }
        if got < 4 {
            return Err(Error::Truncated {
                offset: start,
                missing: (4 - got) as u64,
            });
        }
        let len = u32::from_be_bytes(prefix) as u64;
        if len > self.max_frame as u64 {
            return Err(Error::TooLarge {
                offset: start,
                len,
                max: self.max_frame,
            });
        }
        let mut frame = vec![0u8; len as usize];
        let got = read_full(&mut self.reader, &mut frame).map_err(|source| Error::Io {
            offset: start,
            source,
        })?;
        if got < frame.len() {
            return Err(Error::Truncated {
                offset: start,
                missing: (frame.len() - got) as u64,
            });
        }
        self.offset += 4 + len;
        Ok(Some(frame))
    }
}

impl<R: Read> Iterator for FrameLogReader<R> {
    type Item = Result<Vec<u8>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_frame().transpose()
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Appends frames to a log.
#[derive(Debug)]
pub struct FrameLogWriter<W> {
    writer: W,
}

impl<W: Write> FrameLogWriter<W> {
    /// Writes to `writer` (wrap files in a `BufWriter`).
    pub fn new(writer: W) -> Self {
        FrameLogWriter { writer }
    }

    /// Appends one frame.
    pub fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let len = u32::try_from(frame.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
        self.writer.write_all(&len.to_be_bytes())?;
        self.writer.write_all(frame)
    }

    /// Flushes buffered frames.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    /// Flushes and gives back the writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.writer.flush()?;
        Ok(self.writer)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut w = FrameLogWriter::new(Vec::new());
        w.write_frame(b"one").unwrap();
        w.write_frame(b"").unwrap();
        w.write_frame(&[7u8; 300]).unwrap();
        let bytes = w.into_inner().unwrap();
        let frames: Vec<_> = FrameLogReader::new(&bytes[..])
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(frames, vec![b"one".to_vec(), vec![], vec![7u8; 300]]);

        let cut = &bytes[..bytes.len() - 10];
        let err = FrameLogReader::new(cut).last().unwrap().unwrap_err();
        assert!(matches!(err, Error::Truncated { missing: 10, .. }), "{err}");
        let err = FrameLogReader::new(&bytes[..2])
            .next()
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, Error::Truncated { missing: 2, .. }), "{err}");
    }

    #[test]
    fn hostile_length_is_refused_before_allocating() {
        let bytes = u32::MAX.to_be_bytes();
        let err = FrameLogReader::new(&bytes[..]).next().unwrap().unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    }
}
