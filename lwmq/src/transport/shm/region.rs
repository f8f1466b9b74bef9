//! [`Region`]: the memory rings and doorbells live in, a mapped memory file or (for
//! tests, Miri and fuzzing) heap memory. Its own module so that the ring, the doorbell
//! and the segment layout all build on it without depending on each other.

use std::alloc::Layout;
use std::ffi::CStr;
use std::io;
use std::os::fd::OwnedFd;

use super::sys::{self, Mapping};

/// Memory that rings and doorbells live in: a shared mapping of a memory file (kept
/// open when we may pass it on), or private heap memory for tests. Page aligned, zeroed
/// when created.
#[derive(Debug)]
pub(crate) struct Region {
    kind: RegionKind,
}

#[derive(Debug)]
enum RegionKind {
    Shared { map: Mapping, fd: Option<OwnedFd> },
    Heap { ptr: *mut u8, layout: Layout },
}

// SAFETY: a Region is an address range plus an owner; all access to the memory goes
// through atomics and raw pointers whose synchronization the ring and doorbell
// protocols define. The heap pointer is owned exclusively by the Region.
unsafe impl Send for Region {}
// SAFETY: as above; `&Region` only hands out raw pointers.
unsafe impl Sync for Region {}

impl Region {
    /// A new sealed memory file of `size` bytes, mapped; the descriptor is kept.
    pub fn memfd(name: &CStr, size: usize) -> io::Result<Region> {
        let fd = sys::sealed_memfd(name, size)?;
        let map = Mapping::map(&fd, size)?;
        Ok(Region {
            kind: RegionKind::Shared { map, fd: Some(fd) },
        })
    }

    /// Maps a checked memory file; the descriptor is kept.
    pub fn map(fd: OwnedFd, size: usize) -> io::Result<Region> {
        let map = Mapping::map(&fd, size)?;
        Ok(Region {
            kind: RegionKind::Shared { map, fd: Some(fd) },
        })
    }

    /// Zeroed, page-aligned heap memory.
    pub fn heap(size: usize) -> Region {
        let layout = Layout::from_size_align(size.max(1), 4096)
            .expect("heap region sizes are small multiples of the page size");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Region {
            kind: RegionKind::Heap { ptr, layout },
        }
    }

    /// Whether the memory is this process's own (heap), never mapped by another.
    pub fn is_private(&self) -> bool {
        matches!(self.kind, RegionKind::Heap { .. })
    }

    /// The first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        match &self.kind {
            RegionKind::Shared { map, .. } => map.as_ptr(),
            RegionKind::Heap { ptr, .. } => *ptr,
        }
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        match &self.kind {
            RegionKind::Shared { map, .. } => map.len(),
            RegionKind::Heap { layout, .. } => layout.size(),
        }
    }

    /// The memory file, if any and still kept.
    pub fn fd(&self) -> Option<&OwnedFd> {
        match &self.kind {
            RegionKind::Shared { fd, .. } => fd.as_ref(),
            RegionKind::Heap { .. } => None,
        }
    }

    /// Closes the memory file (the mapping stays).
    pub fn close_fd(&mut self) {
        if let RegionKind::Shared { fd, .. } = &mut self.kind {
            *fd = None;
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let RegionKind::Heap { ptr, layout } = self.kind {
            // SAFETY: allocated in `heap` with this layout, freed once.
            unsafe { std::alloc::dealloc(ptr, layout) };
        }
    }
}
