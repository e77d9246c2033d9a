//! Which pair serves which zone (pure): reserved zones alone on a pair while the region has
//! pairs to spare, grid cells in contiguous blocks.
//!
//! Cells are ordered along a Z-order (Morton) curve of their coordinates, the same cell of
//! every layer next to each other (so a device's "ground" and "air" neighbourhoods tend to share
//! a pair), and the order is cut into one run per pair, as equal as the count allows: runs of a
//! Z-order curve are compact blocks, so most neighbours of a cell are on its pair and few
//! interest areas reach across. Reserved zones take the first pairs of the list, one each,
//! leaving at least one pair for the grid; reserved zones beyond that share the grid's pairs.
//! Pairs are given in order of preference (least loaded first); moving zones by load is the
//! balancer's job (its own issue), not this one's.

use std::collections::BTreeMap;

use super::{Geometry, RESERVED, WHOLE};

/// Zone -> pair for every zone of `geometry`, over `pairs` (none: an empty map).
pub fn assign(geometry: &Geometry, pairs: &[u32]) -> BTreeMap<u32, u32> {
    let mut out = BTreeMap::new();
    if pairs.is_empty() {
        return out;
    }
    let reserved = geometry.reserved.len();
    let dedicated = reserved.min(pairs.len() - 1);
    let (alone, grid_pairs) = pairs.split_at(dedicated);
    for (i, pair) in alone.iter().enumerate() {
        out.insert(RESERVED | i as u32, *pair);
    }
    for i in dedicated..reserved {
        out.insert(
            RESERVED | i as u32,
            grid_pairs[(i - dedicated) % grid_pairs.len()],
        );
    }
    if geometry.grid.is_none() {
        out.insert(WHOLE, grid_pairs[0]);
        return out;
    }
    let mut cells: Vec<(u64, u8, u32)> = geometry
        .zones()
        .into_iter()
        .filter_map(|z| geometry.cell(z).map(|(layer, c)| (morton(c), layer, z)))
        .collect();
    cells.sort_unstable();
    let n = cells.len();
    let k = grid_pairs.len();
    for (i, (_, _, zone)) in cells.into_iter().enumerate() {
        // Run j holds cells [j*n/k, (j+1)*n/k): sizes differ by at most one.
        let j = (i * k) / n.max(1);
        out.insert(zone, grid_pairs[j.min(k - 1)]);
    }
    out
}

/// Interleaves the low 21 bits of each coordinate: x in bit 0, y in bit 1, z in bit 2, ...
fn morton(c: [u32; 3]) -> u64 {
    let spread = |v: u32| {
        let mut x = u64::from(v) & 0x1f_ffff;
        x = (x | x << 32) & 0x1f_0000_0000_ffff;
        x = (x | x << 16) & 0x1f_0000_ff00_00ff;
        x = (x | x << 8) & 0x100f_00f0_0f00_f00f;
        x = (x | x << 4) & 0x10c3_0c30_c30c_30c3;
        x = (x | x << 2) & 0x1249_2492_4924_9249;
        x
    };
    spread(c[0]) | spread(c[1]) << 1 | spread(c[2]) << 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zones::{Grid, Reserved};

    fn grid(nx: u32, ny: u32, layers: usize) -> Geometry {
        Geometry {
            grid: Some(Grid {
                origin: [0.0; 3],
                cell: [10.0, 10.0, 0.0],
                counts: [nx, ny, 1],
            }),
            layers: (0..layers).map(|i| format!("l{i}")).collect(),
            reserved: Vec::new(),
        }
    }

    /// Connected pieces of `pair`'s cells on layer 0 (8-neighbourhood).
    fn pieces(g: &Geometry, a: &BTreeMap<u32, u32>, pair: u32) -> usize {
        let mine: Vec<u32> = a
            .iter()
            .filter(|(z, p)| **p == pair && g.cell(**z).is_some_and(|(l, _)| l == 0))
            .map(|(z, _)| *z)
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        let mut count = 0;
        for &start in &mine {
            if !seen.insert(start) {
                continue;
            }
            count += 1;
            let mut stack = vec![start];
            while let Some(z) = stack.pop() {
                for &o in &mine {
                    if g.adjacent(z, o) && seen.insert(o) {
                        stack.push(o);
                    }
                }
            }
        }
        count
    }

    #[test]
    fn morton_interleaves() {
        assert_eq!(morton([1, 0, 0]), 1);
        assert_eq!(morton([0, 1, 0]), 2);
        assert_eq!(morton([0, 0, 1]), 4);
        assert_eq!(morton([3, 3, 0]), 0b11_011);
        assert_eq!(morton([(1 << 21) - 1, 0, 0]), 0x1249_2492_4924_9249);
    }

    #[test]
    fn cells_go_in_equal_contiguous_blocks_with_every_layer_of_a_cell_together() {
        let g = grid(8, 8, 2);
        let a = assign(&g, &[1, 2, 3, 4]);
        assert_eq!(a.len(), 128);
        for pair in 1..=4 {
            assert_eq!(a.values().filter(|p| **p == pair).count(), 32);
            assert_eq!(pieces(&g, &a, pair), 1, "pair {pair}'s block is one piece");
        }
        for z in 0..64 {
            assert_eq!(a[&z], a[&(z + 64)], "cell {z} of both layers on one pair");
        }
        // Two pairs split an 8x8 grid into two halves; an odd count still differs by one.
        let a = assign(&grid(3, 3, 1), &[7, 8]);
        let n7 = a.values().filter(|p| **p == 7).count();
        assert!((4..=5).contains(&n7), "{a:?}");
        assert_eq!(assign(&grid(4, 4, 1), &[]).len(), 0);
    }

    #[test]
    fn reserved_zones_get_pairs_of_their_own_while_pairs_allow() {
        let mut g = grid(4, 4, 1);
        g.reserved = (0..2)
            .map(|i| Reserved {
                name: format!("boss{i}"),
                min: [0.0; 3],
                max: [1.0; 3],
            })
            .collect();
        let a = assign(&g, &[1, 2, 3]);
        assert_eq!((a[&RESERVED], a[&(RESERVED | 1)]), (1, 2));
        assert!((0..16).all(|z| a[&z] == 3), "the grid on the pair left");
        // Too few pairs: one dedicated, the other reserved zone shares the grid's pair.
        let a = assign(&g, &[1, 2]);
        assert_eq!((a[&RESERVED], a[&(RESERVED | 1)]), (1, 2));
        assert!((0..16).all(|z| a[&z] == 2));
        let a = assign(&g, &[5]);
        assert!(a.values().all(|p| *p == 5) && a.len() == 18);
        // No grid: the whole scene on the first pair left after the reserved zones.
        g.grid = None;
        let a = assign(&g, &[1, 2, 3]);
        assert_eq!(a[&WHOLE], 3);
    }
}
