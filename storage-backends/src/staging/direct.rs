//! Staging files written around the page cache (`O_DIRECT`): a staging file's bytes are written once, synced once
//! at commit and then served from the blob path, so copying them into the page cache and writing them back from
//! there cost CPU for nothing (on the bench machine, buffered writes and their writeback cost 0.6–1.7 CPU-s/GiB,
//! direct writes 0.1–0.2). Direct writes need the buffer's address, the file offset and the length aligned to
//! [`ALIGN`]; [`Buffer`] provides the address, [`Sink`] keeps every direct write at an aligned offset and writes the
//! unaligned tail of a body through the page cache. Where the file system refuses `O_DIRECT` (at open or at the
//! first write) every write goes through the page cache, as before. Used by [`super`] only.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::mapped::{self, Mapped};

/// Alignment of direct writes: the page size, a multiple of every common logical block size.
pub(super) const ALIGN: usize = mapped::PAGE;

/// A fixed-size byte buffer whose start is [`ALIGN`]ed when it was made for direct writes (unaligned memory only
/// means the writes of this buffer go through the page cache); on huge pages (see [`crate::mapped`]).
pub(super) struct Buffer {
    /// `None` only once dropped (its memory is then kept for the next buffer: [`mapped::keep`]).
    mem: Option<Mapped>,
    len: usize,
    aligned: bool,
}

impl Buffer {
    /// An empty buffer of `cap` bytes, aligned when `aligned`: kept memory when there is some, else new.
    pub(super) fn take(cap: usize, aligned: bool) -> Buffer {
        Buffer::on(mapped::take(cap), aligned)
    }

    /// An empty buffer of new memory of `cap` bytes (a multiple of [`ALIGN`]), aligned when `aligned`.
    #[cfg(test)]
    pub(super) fn new(cap: usize, aligned: bool) -> Buffer {
        Buffer::on(Mapped::new(cap), aligned)
    }

    fn on(mem: Mapped, aligned: bool) -> Buffer {
        let aligned = aligned && mem.is_page_aligned();
        Buffer { mem: Some(mem), len: 0, aligned }
    }

    fn cap(&self) -> usize {
        self.mem.as_ref().map_or(0, |m| m.len())
    }

    /// Copies as much of `bytes` as fits; returns how much that was.
    pub(super) fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.cap() - self.len);
        let at = self.len;
        self.memory_mut()[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    /// Room for `n` more bytes, to be filled by the caller through the returned slice.
    pub(super) fn space(&mut self, n: usize) -> &mut [u8] {
        let at = self.len;
        self.len += n;
        &mut self.memory_mut()[at..at + n]
    }

    pub(super) fn is_full(&self) -> bool {
        self.len == self.cap()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn clear(&mut self) {
        self.len = 0;
    }

    fn memory_mut(&mut self) -> &mut [u8] {
        self.mem.as_deref_mut().unwrap_or_default()
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.mem.as_deref().unwrap_or_default()[..self.len]
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(mem) = self.mem.take() {
            mapped::keep(mem);
        }
    }
}

/// One staging file's two handles: the `flock`ed one (page cache: reads, the unaligned tail, syncs, truncation)
/// and, where the file system allows it, an `O_DIRECT` one for aligned writes.
pub(super) struct Sink {
    pub(super) file: Arc<File>,
    direct: Option<File>,
    /// Set when a direct write was refused: from then on everything goes through the page cache.
    refused: AtomicBool,
}

impl Sink {
    /// Opens the direct handle on `path` next to the open `file` (blocking).
    pub(super) fn open(file: Arc<File>, path: &Path) -> Sink {
        if O_DIRECT == 0 {
            return Sink { file, direct: None, refused: AtomicBool::new(false) };
        }
        let direct = std::fs::OpenOptions::new().write(true).custom_flags(O_DIRECT).open(path);
        let direct = match direct {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "no direct writes to staging files here");
                None
            }
        };
        Sink { file, direct, refused: AtomicBool::new(false) }
    }

    /// Whether writes should be gathered at aligned offsets in aligned buffers.
    pub(super) fn direct(&self) -> bool {
        self.direct.is_some() && !self.refused.load(Ordering::Relaxed)
    }

    /// Writes `buf` at `pos` (blocking): directly when both are aligned, the unaligned tail (and everything, when
    /// direct writes are refused) through the page cache.
    pub(super) fn write_at(&self, buf: &Buffer, pos: u64) -> std::io::Result<()> {
        let bytes = buf.bytes();
        let whole = match &self.direct {
            Some(d) if buf.aligned && self.direct() && pos.is_multiple_of(ALIGN as u64) => {
                let whole = bytes.len() - bytes.len() % ALIGN;
                match d.write_all_at(&bytes[..whole], pos) {
                    Ok(()) => whole,
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                        tracing::debug!(error = %e, "direct write refused: writing staging files through the page cache");
                        self.refused.store(true, Ordering::Relaxed);
                        0
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => 0,
        };
        if whole < bytes.len() {
            self.file.write_all_at(&bytes[whole..], pos + whole as u64)?;
        }
        Ok(())
    }
}

/// The open flag for direct writes; none (the page cache) where the platform has no `O_DIRECT`.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
const O_DIRECT: i32 = rustix::fs::OFlags::DIRECT.bits() as i32;
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
const O_DIRECT: i32 = 0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_fill_up_to_their_size_and_say_so() {
        let mut b = Buffer::new(2 * ALIGN, true);
        assert!(b.aligned, "the allocator gave an alignable block");
        assert_eq!(b.bytes().as_ptr() as usize % ALIGN, 0);
        assert_eq!(b.fill(&[1; 3 * ALIGN]), 2 * ALIGN);
        assert!(b.is_full());
        b.clear();
        assert!(b.is_empty());
        b.space(3).copy_from_slice(b"abc");
        assert_eq!(b.fill(b"de"), 2);
        assert_eq!(b.bytes(), b"abcde");
    }

    #[test]
    fn buffers_of_whole_huge_pages_start_on_one() {
        let huge = crate::mapped::HUGE;
        let mut b = Buffer::new(2 * huge, true);
        assert!(b.aligned);
        assert_eq!(b.bytes().as_ptr() as usize % huge, 0, "a huge-page buffer starts on a huge page");
        assert_eq!(b.fill(&vec![7; 3 * huge]), 2 * huge);
        assert!(b.bytes().iter().all(|&x| x == 7));
    }

    #[test]
    fn aligned_and_unaligned_writes_land_where_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let file = Arc::new(
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).unwrap(),
        );
        let sink = Sink::open(file, &path);
        // On the file systems registries keep their data on, the direct path is the one under test.
        assert!(sink.direct() || !direct_capable(dir.path()), "ext4 and xfs take O_DIRECT: it must be used there");
        let mut expected = Vec::new();
        let mut b = Buffer::new(2 * ALIGN, sink.direct());
        // An aligned block and a tail, then a write at the unaligned end (through the page cache).
        let first: Vec<u8> = (0..ALIGN + 100).map(|i| i as u8).collect();
        b.fill(&first);
        sink.write_at(&b, 0).unwrap();
        expected.extend_from_slice(&first);
        b.clear();
        b.fill(b"tail");
        sink.write_at(&b, expected.len() as u64).unwrap();
        expected.extend_from_slice(b"tail");
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        // Direct writes over a page the page cache holds (the tail just written): the cache and the disk agree.
        b.clear();
        let over: Vec<u8> = (0..2 * ALIGN).map(|i| (i * 7) as u8).collect();
        b.fill(&over);
        sink.write_at(&b, ALIGN as u64).unwrap();
        expected.truncate(ALIGN);
        expected.extend_from_slice(&over);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    /// Whether `dir` is on ext4 or xfs, which accept direct writes (as `stat -f` names the file system).
    fn direct_capable(dir: &Path) -> bool {
        let out = std::process::Command::new("stat").args(["-f", "-c", "%T"]).arg(dir).output();
        let kind = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default();
        matches!(kind.as_str(), "ext2/ext3" | "ext4" | "xfs")
    }
}
