//! Reading the frames of one segment, opened independently of the writer.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::frame::read_frame;
use super::{io_err, open_checked, Error, Format, SEGMENT_HEADER};

/// A cursor over one segment's frames. Which segment follows, and where
/// the readable part of the log ends, is the owner's to know: the WAL reads
/// a snapshot of its own segment list, the agent's sender follows a writer
/// in another thread by file name.
#[derive(Debug)]
pub struct SegmentReader {
    format: &'static Format,
    path: PathBuf,
    base: u64,
    pos: u64,
    file: BufReader<File>,
}

impl SegmentReader {
    /// Opens segment `base` of `dir` at position `pos`, checking its magic.
    /// A position inside the segment header (its base included) stands for
    /// the segment's first frame.
    pub fn open(
        format: &'static Format,
        dir: &Path,
        base: u64,
        pos: u64,
    ) -> Result<SegmentReader, Error> {
        let path = format.segment_path(dir, base);
        let mut file = open_checked(format, &path)?;
        let pos = pos.max(base + SEGMENT_HEADER);
        file.seek(SeekFrom::Start(pos - base))
            .map_err(io_err("seek", &path))?;
        Ok(SegmentReader {
            format,
            path,
            base,
            pos,
            file: BufReader::with_capacity(format.read_buffer, file),
        })
    }

    /// Reads the frame at the current position into `payload` and returns
    /// its start. `limit` is a position the frame cannot end past (the
    /// segment's end, or the log's durable end). A frame that does not read
    /// back is [`Error::Corrupt`] naming the file and offset; the reader is
    /// then lost (nothing after a bad frame can be located) and must be
    /// dropped.
    pub fn read(&mut self, limit: u64, payload: &mut Vec<u8>) -> Result<u64, Error> {
        let available = limit.saturating_sub(self.pos);
        match read_frame(self.format, &mut self.file, available, payload)
            .map_err(io_err("read", &self.path))?
        {
            Ok(size) => {
                let start = self.pos;
                self.pos += size;
                Ok(start)
            }
            Err(defect) => Err(Error::Corrupt {
                path: self.path.clone(),
                offset: self.pos - self.base,
                position: self.pos,
                reason: defect.to_string(),
            }),
        }
    }

    /// Position of the next frame.
    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's current length (a live writer's segment grows).
    pub fn file_len(&self) -> Result<u64, Error> {
        let meta = self
            .file
            .get_ref()
            .metadata()
            .map_err(io_err("stat", &self.path))?;
        Ok(meta.len())
    }
}
