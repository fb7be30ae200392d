//! Streaming a blob out of a local file (the filesystem backend's reads), for [`crate::blobs`] only. A file whose
//! bytes are in the page cache is read through it, a chunk per blocking task, straight into the buffer handed to
//! the HTTP layer. A file that is not is read around the page cache (`O_DIRECT`) into reused buffers, one read
//! ahead of the one being sent: staging writes go around the page cache too ([`crate::staging`]), so a blob that was
//! just pushed or fetched through pull-through is on disk only, and a buffered first read would spend its time
//! filling fresh page-cache pages, which on the bench machine (a VM, where memory touched for the first time costs
//! the host a fault) ran at 490 MB/s where direct reads of the same file ran at 1.8–2.3 GB/s. Which reads go which
//! way is the caller's choice (`cold`, [`crate::blobs`]): a blob read a second time is worth the page cache.

use std::fs::File;
use std::io::IoSliceMut;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::blobs::ByteStream;
use crate::mapped::{self, Mapped};

/// Size of the reads through the page cache.
const READ_CHUNK: usize = 1024 * 1024;

/// Size of the direct reads: one huge page, the size of the staging buffers, so the two share spare memory. On the
/// bench machine 4 MiB reads ran at 1.8–2.3 GB/s and 2 MiB ones at 1.0–1.5 one at a time, but two 4 MiB buffers
/// per cold reader took the peak RSS of the bench's mixed load (two pullers) from 46 to 55 MiB.
const DIRECT_CHUNK: usize = mapped::HUGE;

/// The first direct read is smaller, so that the first byte does not wait for a whole [`DIRECT_CHUNK`].
const FIRST_DIRECT_CHUNK: usize = 256 * 1024;

/// Alignment of direct reads' offsets, lengths and buffers: the page size, a multiple of every common logical
/// block size (the staging files' direct writes use the same).
const ALIGN: u64 = mapped::PAGE as u64;

/// Ranges shorter than this are always read through the page cache (manifests, configs, small layers).
pub(crate) const DIRECT_MIN: u64 = 1024 * 1024;

/// Whether the first byte of `range` is in the page cache (a non-blocking read of it, `RWF_NOWAIT`). Where the
/// kernel cannot say, the file counts as cached and is read as before.
pub(crate) fn is_cached(file: &File, at: u64) -> bool {
    let mut byte = [0u8; 1];
    let read = rustix::io::preadv2(file, &mut [IoSliceMut::new(&mut byte)], at, rustix::io::ReadWriteFlags::NOWAIT);
    !matches!(read, Err(rustix::io::Errno::AGAIN))
}

/// Streams `range` of `file`: around the page cache when `cold` says so and the file system allows it, else
/// through it.
pub(crate) async fn stream(file: File, range: Range<u64>, cold: bool) -> std::io::Result<ByteStream> {
    let file = Arc::new(file);
    if cold {
        match direct(file.clone(), range.clone()).await {
            Ok(stream) => return Ok(stream),
            Err(e) => tracing::debug!(error = %e, "no direct read of a blob file; reading it through the page cache"),
        }
    }
    Ok(buffered(file, range))
}

/// Streams `range` of a local file in [`READ_CHUNK`] pieces, each read on the blocking pool straight into the buffer
/// that is handed to the HTTP layer: one copy out of the page cache, where a `tokio::fs::File` makes two (into its
/// own buffer, then out of it) and the next read waits for the previous copy.
fn buffered(file: Arc<File>, range: Range<u64>) -> ByteStream {
    let end = range.end;
    let stream = futures::stream::try_unfold((file, range.start), move |(file, at)| async move {
        if at >= end {
            return Ok(None);
        }
        let len = (end - at).min(READ_CHUNK as u64) as usize;
        let reader = file.clone();
        let chunk = tokio::task::spawn_blocking(move || read_exact_at(&reader, at, len))
            .await
            .map_err(std::io::Error::other)??;
        Ok(Some((Bytes::from(chunk), (file, at + len as u64))))
    });
    stream.boxed()
}

/// `len` bytes of `file` from offset `at`, read into a fresh buffer without zeroing it first. A file shorter than
/// that is an error (a blob's size is known before it is read).
fn read_exact_at(file: &File, at: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    let mut buf = Vec::with_capacity(len);
    let mut f = file;
    f.seek(std::io::SeekFrom::Start(at))?;
    f.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() < len {
        return Err(short(at + buf.len() as u64, at + len as u64));
    }
    Ok(buf)
}

fn short(found: u64, expected: u64) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("blob file ended at {found} of {expected} bytes"))
}

/// One direct read: the bytes of `want` (a part of the served range), read as the aligned span around it into
/// memory that goes back to [`mapped`]'s spares when the HTTP layer drops the chunk.
struct DirectChunk {
    mem: Option<Mapped>,
    skip: usize,
    len: usize,
}

impl AsRef<[u8]> for DirectChunk {
    fn as_ref(&self) -> &[u8] {
        &self.mem.as_deref().unwrap_or_default()[self.skip..self.skip + self.len]
    }
}

impl Drop for DirectChunk {
    fn drop(&mut self) {
        if let Some(mem) = self.mem.take() {
            mapped::keep(mem);
        }
    }
}

/// Reads `want` of the (`O_DIRECT`) `file` with one aligned read (blocking). The memory goes back to the spares
/// however the read ends.
fn read_direct(file: &File, want: Range<u64>) -> std::io::Result<Bytes> {
    let start = want.start & !(ALIGN - 1);
    let span = ((want.end - start).div_ceil(ALIGN) * ALIGN) as usize;
    let skip = (want.start - start) as usize;
    let len = (want.end - want.start) as usize;
    let mut chunk = DirectChunk { mem: Some(mapped::take(DIRECT_CHUNK.max(span))), skip, len };
    let mem = chunk.mem.as_deref_mut().unwrap_or_default();
    let mut got = 0usize;
    while got < skip + len {
        let n = rustix::io::pread(file, &mut mem[got..span], start + got as u64)?;
        if n == 0 {
            return Err(short(start + got as u64, want.end));
        }
        got += n;
    }
    Ok(Bytes::from_owner(chunk))
}

/// Streams `range` of `file` with direct reads, the next one under way while a chunk is sent. Fails (before any
/// byte is streamed) where the file system refuses `O_DIRECT` or an unaligned read; the caller then reads the file
/// through the page cache.
async fn direct(file: Arc<File>, range: Range<u64>) -> std::io::Result<ByteStream> {
    use rustix::fs::OFlags;
    let flags = rustix::fs::fcntl_getfl(&*file)?;
    rustix::fs::fcntl_setfl(&*file, flags | OFlags::DIRECT)?;
    let end = range.end;
    // The first chunk ends on an aligned offset, so that every later read starts on one.
    let first_end = ((range.start & !(ALIGN - 1)) + FIRST_DIRECT_CHUNK as u64).min(end);
    let next = move |at: u64| (at < end).then(|| at..(at + DIRECT_CHUNK as u64).min(end));
    let spawn = |file: &Arc<File>, want: Range<u64>| -> JoinHandle<std::io::Result<Bytes>> {
        let file = file.clone();
        tokio::task::spawn_blocking(move || read_direct(&file, want))
    };
    let first = spawn(&file, range.start..first_end).await.map_err(std::io::Error::other)?;
    let first = match first {
        Ok(chunk) => chunk,
        Err(e) => {
            rustix::fs::fcntl_setfl(&*file, flags)?;
            return Err(e);
        }
    };
    let ahead = next(first_end).map(|want| spawn(&file, want));
    let rest = futures::stream::try_unfold((file, ahead, first_end), move |(file, ahead, at)| async move {
        let Some(pending) = ahead else { return Ok(None) };
        let chunk = pending.await.map_err(std::io::Error::other)??;
        let at = at + chunk.len() as u64;
        let ahead = next(at).map(|want| spawn(&file, want));
        Ok(Some((chunk, (file, ahead, at))))
    });
    Ok(futures::stream::once(async { Ok(first) }).chain(rest).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use std::io::Write;

    async fn collect(stream: ByteStream) -> Vec<u8> {
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        chunks.concat()
    }

    #[tokio::test]
    async fn direct_and_buffered_reads_serve_the_same_bytes_of_any_range() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("blob");
        let content: Vec<u8> = (0..(9 * 1024 * 1024 + 12345u32)).map(|i| (i * 7 + i / 4096) as u8).collect();
        std::fs::File::create(&path).unwrap().write_all(&content).unwrap();
        let size = content.len() as u64;
        for range in [0..size, 1..size, 4095..4097, 5000..5_000_000, size - 1..size, 1_048_575..9_437_185] {
            let want = &content[range.start as usize..range.end as usize];
            let file = Arc::new(File::open(&path).unwrap());
            assert_eq!(collect(buffered(file, range.clone())).await, want, "{range:?} through the page cache");
            // On the disk the repository is on, direct reads are allowed (a fall back would hide their bugs).
            let file = Arc::new(File::open(&path).unwrap());
            assert_eq!(collect(direct(file, range.clone()).await.unwrap()).await, want, "{range:?} direct");
        }
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_range_is_an_error_not_a_short_blob() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, vec![1u8; 3 * 1024 * 1024]).unwrap();
        for cold in [false, true] {
            let file = File::open(&path).unwrap();
            let res: Result<Vec<Bytes>, _> = match stream(file, 0..8 * 1024 * 1024, cold).await {
                Ok(s) => s.try_collect().await,
                Err(e) => Err(e),
            };
            assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof, "cold {cold}");
        }
    }

    #[test]
    fn a_file_out_of_the_page_cache_reads_as_cold_and_once_read_as_cached() {
        // In the crate's directory, on the disk the repository is on (a tmpfs keeps every file in memory).
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, vec![3u8; 64 * 1024]).unwrap();
        let file = File::open(&path).unwrap();
        file.sync_all().unwrap();
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        assert!(!is_cached(&file, 0), "a synced file whose pages were dropped is not in the page cache");
        std::fs::read(&path).unwrap();
        assert!(is_cached(&file, 0), "a file just read is in the page cache");
    }
}
