//! mimalloc as the global allocator, entered through its plain calls whenever a layout's
//! alignment is one that mimalloc's size classes give by themselves.
//!
//! Why not `mimalloc::MiMalloc` as it is: that allocator passes every request to
//! `mi_malloc_aligned(size, align)`. In mimalloc v3 that call's fast path only serves
//! blocks of at most 1 KiB (`MI_SMALL_SIZE_MAX`); a larger request with any alignment,
//! even 8, takes `mi_theap_malloc_zero_aligned_at_generic`, which over-allocates by the
//! alignment and costs about 235 instructions instead of about 30 (callgrind on one
//! gateway hop, docs/PERFORMANCE.md). The same dispatch is proposed upstream
//! (purpleprotocol/mimalloc_rust pull request 170, open at the time of writing).
//!
//! Why the plain calls are enough (mimalloc v3 source, `page-queue.c` `mi_bin`, and
//! `types.h`): every block size is a whole number of 8-byte words; sizes up to 8 words
//! have a bin of their own and larger bins are all an even number of words, so a request
//! whose size is a multiple of 16 bytes lands in a bin whose block size is a multiple of
//! 16; a page's first block starts 16-byte aligned (`MI_PAGE_MIN_START_BLOCK_ALIGN`), and
//! blocks too large for a bin start on an OS page. So a block for `size` is aligned to
//! any power of two up to 16 that divides `size`. Everything else (alignment above 16, or
//! a size that is not a multiple of its alignment) keeps the `*_aligned` calls.
#![deny(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The largest alignment mimalloc's plain calls guarantee (`MI_MAX_ALIGN_SIZE`), for a
/// size that is a multiple of it.
const PLAIN_ALIGN_MAX: usize = 16;

/// Whether a block from mimalloc's plain calls for `size` bytes is already aligned to
/// `align` (a power of two, as `Layout` guarantees).
fn plain_call_aligns(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN_MAX && size.is_multiple_of(align)
}

/// The global allocator of the `meshbox` binary (see the crate's documentation).
#[derive(Debug, Default, Clone, Copy)]
pub struct MeshAllocator;

// SAFETY: every pointer returned comes from mimalloc for at least `layout.size()` bytes,
// aligned to `layout.align()` (see `plain_call_aligns` and the crate documentation for
// the plain calls; the `*_aligned` calls guarantee it themselves); `dealloc` and
// `realloc` hand mimalloc only pointers it returned, as `GlobalAlloc`'s callers must.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for MeshAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        if plain_call_aligns(size, align) {
            mi::mi_malloc(size).cast()
        } else {
            mi::mi_malloc_aligned(size, align).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        if plain_call_aligns(size, align) {
            mi::mi_zalloc(size).cast()
        } else {
            mi::mi_zalloc_aligned(size, align).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        if plain_call_aligns(new_size, align) {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, align).cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static ALLOCATOR: MeshAllocator = MeshAllocator;

    const ALIGNS: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 4096];

    fn sizes() -> impl Iterator<Item = usize> {
        (1..=2048).chain((2048..=70_000).step_by(56)).chain([
            1 << 20,
            (1 << 20) + 8,
            3 << 20,
            (8 << 20) + 48,
        ])
    }

    #[test]
    fn the_plain_calls_are_taken_only_for_alignments_up_to_16_that_divide_the_size() {
        assert!(plain_call_aligns(48, 16));
        assert!(plain_call_aligns(3, 1));
        assert!(plain_call_aligns(4096, 8));
        assert!(!plain_call_aligns(24, 16));
        assert!(!plain_call_aligns(64, 32));
        assert!(!plain_call_aligns(6, 4));
    }

    /// Every block, from either kind of call, is aligned as its layout asks, holds what
    /// was written to it, and keeps it through growing and shrinking.
    #[test]
    fn every_block_is_aligned_as_asked_and_keeps_its_bytes_through_realloc() {
        for align in ALIGNS {
            for size in sizes().filter(|s| *s >= align && s.is_multiple_of(align) || align <= 8) {
                let layout = Layout::from_size_align(size, align).expect("layout");
                // SAFETY: a non-zero size; the block is written within its size, and freed
                // with the layout it was made with.
                #[allow(unsafe_code)]
                unsafe {
                    let zeroed = std::alloc::alloc_zeroed(layout);
                    assert!(!zeroed.is_null());
                    assert_eq!(zeroed as usize % align, 0, "zeroed {size} align {align}");
                    assert!(std::slice::from_raw_parts(zeroed, size)
                        .iter()
                        .all(|b| *b == 0));
                    std::alloc::dealloc(zeroed, layout);

                    let p = std::alloc::alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    for i in 0..size {
                        *p.add(i) = (i % 251) as u8;
                    }
                    let grown_size = size * 2 + align;
                    let grown = std::alloc::realloc(p, layout, grown_size);
                    assert!(!grown.is_null());
                    assert_eq!(
                        grown as usize % align,
                        0,
                        "grown {grown_size} align {align}"
                    );
                    for i in 0..size {
                        assert_eq!(*grown.add(i), (i % 251) as u8);
                    }
                    let grown_layout = Layout::from_size_align(grown_size, align).expect("layout");
                    let shrunk_size = size.div_ceil(2);
                    let shrunk = std::alloc::realloc(grown, grown_layout, shrunk_size);
                    assert!(!shrunk.is_null());
                    assert_eq!(
                        shrunk as usize % align,
                        0,
                        "shrunk {shrunk_size} align {align}"
                    );
                    for i in 0..shrunk_size {
                        assert_eq!(*shrunk.add(i), (i % 251) as u8);
                    }
                    let shrunk_layout =
                        Layout::from_size_align(shrunk_size, align).expect("layout");
                    std::alloc::dealloc(shrunk, shrunk_layout);
                }
            }
        }
    }

    /// Many live blocks of one awkward size at once: each is aligned, whichever free list
    /// it came from.
    #[test]
    fn many_live_blocks_of_sizes_that_are_multiples_of_16_are_16_aligned() {
        for size in [
            16usize, 48, 80, 112, 144, 176, 208, 240, 1040, 1552, 3216, 5136,
        ] {
            let blocks: Vec<Box<[u128]>> = (0..500)
                .map(|i| vec![i as u128; size / 16].into_boxed_slice())
                .collect();
            for (i, b) in blocks.iter().enumerate() {
                assert_eq!(b.as_ptr() as usize % 16, 0, "size {size}");
                assert!(b.iter().all(|v| *v == i as u128));
            }
        }
    }
}
