//! Page-aligned host memory: the [`MemoryRegion`] of fabrics that need no registration.

use std::alloc::{self, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use crate::api::MemoryRegion;
use crate::error::{Error, Result};

/// Page alignment avoids glibc `memcpy`'s slow path for buffers that differ by a few bytes
/// within a page (see `shared/peers/README.md`).
const ALIGN: usize = 4096;

/// Zeroed, page-aligned heap memory.
pub struct HostRegion {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: HostRegion owns its allocation exclusively, like a Box<[u8]>.
unsafe impl Send for HostRegion {}
// SAFETY: shared access only hands out `&[u8]`, like a Box<[u8]>.
unsafe impl Sync for HostRegion {}

impl HostRegion {
    /// Allocates `len` zeroed bytes aligned to a page.
    pub fn new(len: usize) -> Result<Self> {
        if len == 0 {
            return Ok(HostRegion {
                ptr: NonNull::dangling(),
                len: 0,
            });
        }
        let layout = Layout::from_size_align(len, ALIGN).map_err(|_| Error::TooLarge {
            transport: "host",
            len,
            limit: isize::MAX as usize - ALIGN,
        })?;
        // SAFETY: layout has non-zero size (len > 0 checked above).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| Error::Io {
            transport: "host",
            context: format!("allocating a {len}-byte region"),
            source: std::io::Error::from(std::io::ErrorKind::OutOfMemory),
        })?;
        Ok(HostRegion { ptr, len })
    }
}

impl Deref for HostRegion {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised (zeroed) bytes, or dangling with len 0.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for HostRegion {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for HostRegion {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: allocated in `new` with exactly this layout (it validated then).
            unsafe {
                alloc::dealloc(
                    self.ptr.as_ptr(),
                    Layout::from_size_align_unchecked(self.len, ALIGN),
                )
            }
        }
    }
}

impl MemoryRegion for HostRegion {}

impl std::fmt::Debug for HostRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostRegion({} bytes)", self.len)
    }
}
