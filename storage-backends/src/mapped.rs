//! Large byte buffers in anonymous mappings, on huge pages where they are large enough, and the spare ones kept
//! between requests ([`take`], [`keep`]): the staging files' direct writes ([`crate::staging`]) and the S3 parts
//! being gathered ([`crate::multipart`]) copy every byte of a push into one, and direct reads of cold blob files
//! ([`crate::fileread`]) read into them. In 4 KiB pages each such buffer costs a page fault per 4 KiB when it is
//! new and a TLB miss per 4 KiB when it is filled, and each direct write pins its pages one by one: on the bench
//! machine that was 0.17 CPU-s per GiB pushed to the filesystem, a seventh of a push. A buffer of at least one huge
//! page (2 MiB) starts on a huge-page boundary and asks for huge pages (`MADV_HUGEPAGE`, which the usual `madvise`
//! setting of transparent huge pages honours); the slack before the boundary is never touched, so never resident.
//! Where no mapping can be made, the heap. Crate-internal.

use std::sync::Mutex;

use bytes::Bytes;

/// The size of a huge page on x86-64 and (with 4 KiB pages) arm64.
pub(crate) const HUGE: usize = 2 * 1024 * 1024;

/// The page size every mapping is aligned to.
pub(crate) const PAGE: usize = 4096;

/// `len` zeroed bytes, page-aligned (unless made on the heap, which [`Mapped::is_page_aligned`] tells).
pub(crate) struct Mapped {
    mem: Memory,
    start: usize,
    len: usize,
}

enum Memory {
    Map(memmap2::MmapMut),
    Heap(Vec<u8>),
}

impl Mapped {
    pub(crate) fn new(len: usize) -> Mapped {
        let huge = len >= HUGE;
        let slack = if huge { HUGE - PAGE } else { 0 };
        match memmap2::MmapMut::map_anon((len + slack).max(1)) {
            Ok(map) => {
                let start = if huge { map.as_ptr().align_offset(HUGE).min(slack) } else { 0 };
                if huge {
                    if let Err(e) = map.advise_range(memmap2::Advice::HugePage, start, len) {
                        tracing::debug!(error = %e, "no huge pages for a buffer");
                    }
                }
                Mapped { mem: Memory::Map(map), start, len }
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not map a buffer: using the heap");
                let heap = vec![0u8; len + PAGE];
                // `align_offset` may decline (usize::MAX); then the buffer is simply not aligned.
                let start = heap.as_ptr().align_offset(PAGE).min(PAGE);
                Mapped { mem: Memory::Heap(heap), start, len }
            }
        }
    }

    pub(crate) fn is_page_aligned(&self) -> bool {
        self.as_ptr().align_offset(PAGE) == 0
    }
}

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let all: &[u8] = match &self.mem {
            Memory::Map(map) => map,
            Memory::Heap(heap) => heap,
        };
        &all[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for Mapped {
    fn deref_mut(&mut self) -> &mut [u8] {
        let all: &mut [u8] = match &mut self.mem {
            Memory::Map(map) => map,
            Memory::Heap(heap) => heap,
        };
        &mut all[self.start..self.start + self.len]
    }
}

/// Memory kept between requests, so that a chunked upload's next `PATCH` or a blob's next direct read reuses the
/// last one's instead of asking for fresh memory (in the bench, faulting that memory in and trimming the heap after
/// each `PATCH` cost as much as copying the bytes). Filled by [`keep`], at most [`KEEP`] buffers.
static SPARE: Mutex<Vec<Mapped>> = Mutex::new(Vec::new());

/// How many buffers [`SPARE`] keeps: an upload's two staging buffers and a direct read's two.
const KEEP: usize = 4;

/// A buffer of `len` bytes: kept memory of that size when there is some, else new (zeroed).
pub(crate) fn take(len: usize) -> Mapped {
    let kept = SPARE.lock().ok().and_then(|mut spare| {
        let i = spare.iter().position(|m| m.len() == len)?;
        Some(spare.swap_remove(i))
    });
    kept.unwrap_or_else(|| Mapped::new(len))
}

/// Gives `mem` back for a later [`take`] (or unmaps it, when [`KEEP`] buffers are kept already).
pub(crate) fn keep(mem: Mapped) {
    if let Ok(mut spare) = SPARE.lock() {
        if spare.len() < KEEP {
            spare.push(mem);
        }
    }
}

/// Bytes appended up to a capacity given up front (a part's size), then [`Gathered::freeze`]d into [`Bytes`] that
/// own the memory, which is unmapped when the last of them is dropped (the part's upload is over).
#[derive(Default)]
pub(crate) struct Gathered {
    /// Mapped at the first byte, of `cap` bytes (or more, when the first bytes do not fit).
    mem: Option<Mapped>,
    cap: usize,
    len: usize,
}

impl Gathered {
    /// Room for `cap` bytes; nothing is mapped before the first byte arrives.
    pub(crate) fn with_capacity(cap: usize) -> Gathered {
        Gathered { mem: None, cap, len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.mem.as_deref().unwrap_or_default()[..self.len]
    }

    /// Appends `bytes`, moving to a larger buffer if they do not fit (callers size the buffer for what they
    /// gather, so this is for the unexpected).
    pub(crate) fn extend_from_slice(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let end = self.len + bytes.len();
        let size = match &self.mem {
            None => self.cap.max(end),
            Some(mem) if end > mem.len() => (2 * mem.len()).max(end),
            Some(_) => 0,
        };
        if size > 0 {
            let mut bigger = Mapped::new(size);
            bigger[..self.len].copy_from_slice(self.as_slice());
            self.mem = Some(bigger);
        }
        if let Some(mem) = &mut self.mem {
            mem[self.len..end].copy_from_slice(bytes);
            self.len = end;
        }
    }

    /// The gathered bytes, owning their memory.
    pub(crate) fn freeze(self) -> Bytes {
        match self.mem {
            Some(mem) if self.len > 0 => Bytes::from_owner(Frozen { mem, len: self.len }),
            _ => Bytes::new(),
        }
    }
}

/// The owner behind [`Gathered::freeze`]'s bytes.
struct Frozen {
    mem: Mapped,
    len: usize,
}

impl AsRef<[u8]> for Frozen {
    fn as_ref(&self) -> &[u8] {
        &self.mem[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_start_on_a_huge_page_and_small_ones_on_a_page() {
        let mut big = Mapped::new(3 * HUGE + 5);
        assert_eq!(big.as_ptr() as usize % HUGE, 0, "a buffer of a huge page or more starts on one");
        assert_eq!(big.len(), 3 * HUGE + 5);
        big[3 * HUGE + 4] = 9;
        assert!(big[..3 * HUGE + 4].iter().all(|&b| b == 0), "mapped memory starts zeroed");
        let small = Mapped::new(3 * PAGE);
        assert!(small.is_page_aligned());
        assert_eq!(small.len(), 3 * PAGE);
    }

    #[test]
    fn gathered_bytes_freeze_into_bytes_and_outgrow_their_capacity() {
        let mut g = Gathered::with_capacity(4);
        assert!(g.is_empty());
        g.extend_from_slice(b"abc");
        g.extend_from_slice(b"defg");
        assert_eq!((g.len(), g.as_slice()), (7, &b"abcdefg"[..]));
        let frozen = g.freeze();
        let copy = frozen.slice(2..5);
        drop(frozen);
        assert_eq!(&copy[..], b"cde", "a slice keeps the memory alive");
        assert!(Gathered::with_capacity(0).freeze().is_empty());
        let mut part = Gathered::with_capacity(HUGE);
        part.extend_from_slice(&vec![1; HUGE]);
        assert_eq!(part.freeze().len(), HUGE);
    }
}
