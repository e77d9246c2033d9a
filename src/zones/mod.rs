//! Scene geometry: how a scene splits into zones (pure).
//!
//! A scene may have a **grid**: an origin, a cell size and a cell count per axis (a cell size
//! of 0 leaves an axis unsplit, its count 1: a 2D grid), and up to [`MAX_LAYERS`] named
//! **layers**, independent grids over the same space (e.g. "ground" and "air"); a zone is one
//! cell of one layer. A **reserved zone** is a named box that takes precedence over the grid
//! cells it covers, on every layer (seed 000's "world boss" area). A scene without a grid is
//! one zone, [`WHOLE`], as before zones existed. A position outside the grid belongs to the
//! nearest border cell, so every position has a zone.
//!
//! Zone ids: a reserved zone is `RESERVED | index`; a cell is
//! `layer * cells_per_layer + x + nx * (y + ny * z)`. JSON (`scene.create`, docs/PROTOCOL.md):
//! `{"grid": {"origin": [x,y,z], "cell": [sx,sy,sz], "counts": [nx,ny,nz]},
//!   "layers": ["ground", "air"], "reserved": [{"name": "boss", "min": [..], "max": [..]}]}`.

pub mod assign;

use serde::{Deserialize, Serialize};

/// Layers a scene may have (the wire's 3 layer bits).
pub const MAX_LAYERS: usize = crate::wire::interest::MAX_LAYERS;
/// Most zones one scene may have (cells of every layer plus reserved zones): bounds what a
/// hostile `scene.create` can make the controller hold.
pub const MAX_ZONES: u64 = 4096;
/// Most reserved zones of a scene.
pub const MAX_RESERVED: usize = 64;
/// The high bit marks a reserved zone's id.
pub const RESERVED: u32 = 1 << 31;
/// The one zone of a scene without a grid.
pub const WHOLE: u32 = 0;

/// A uniform grid over the scene.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    pub origin: [f32; 3],
    /// Cell size per axis; 0 leaves the axis unsplit (its count must then be 1).
    pub cell: [f32; 3],
    pub counts: [u32; 3],
}

/// A named box served as one zone, over every layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reserved {
    pub name: String,
    pub min: [f32; 3],
    pub max: [f32; 3],
}

/// How a scene splits into zones.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geometry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<Grid>,
    /// Layer names, layer 0 first; empty means one unnamed layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reserved: Vec<Reserved>,
}

/// One zone as `scene.get` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZoneInfo {
    pub zone: u32,
    /// `cell` or `reserved` (or `whole` for a scene without a grid).
    pub kind: String,
    /// The layer's name (cells), or the reserved zone's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its cell coordinates (cells only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<[u32; 3]>,
    /// Its box (unbounded axes of a grid are left infinite, shown as null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<[Option<f32>; 3]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<[Option<f32>; 3]>,
}

impl Geometry {
    /// Refuses what no scene can be: non-finite or negative sizes, zero counts, an unsplit axis
    /// with a count above 1, too many zones, layers or reserved zones, empty or long names,
    /// inverted boxes. The message says which.
    pub fn validate(&self) -> Result<(), String> {
        if self.layers.len() > MAX_LAYERS {
            return Err(format!("at most {MAX_LAYERS} layers"));
        }
        let name_ok = |n: &str| !n.trim().is_empty() && n.len() <= 64;
        if let Some(bad) = self.layers.iter().find(|n| !name_ok(n)) {
            return Err(format!("layer name {bad:?}: 1 to 64 characters"));
        }
        if self.reserved.len() > MAX_RESERVED {
            return Err(format!("at most {MAX_RESERVED} reserved zones"));
        }
        for r in &self.reserved {
            if !name_ok(&r.name) {
                return Err(format!(
                    "reserved zone name {:?}: 1 to 64 characters",
                    r.name
                ));
            }
            let finite = r.min.iter().chain(&r.max).all(|v| v.is_finite());
            if !finite || (0..3).any(|i| r.min[i] > r.max[i]) {
                return Err(format!(
                    "reserved zone {:?}: min and max must be finite, min <= max",
                    r.name
                ));
            }
        }
        if let Some(g) = &self.grid {
            if !g.origin.iter().all(|v| v.is_finite()) {
                return Err("grid origin must be finite".into());
            }
            for i in 0..3 {
                let (c, n) = (g.cell[i], g.counts[i]);
                if !c.is_finite() || c < 0.0 || n == 0 || (c == 0.0 && n != 1) {
                    return Err(format!(
                        "grid axis {i}: a cell size >= 0 and a count >= 1 (1 when the size is 0)"
                    ));
                }
            }
        }
        if self.zone_count() > MAX_ZONES {
            return Err(format!(
                "at most {MAX_ZONES} zones (cells of every layer plus reserved)"
            ));
        }
        Ok(())
    }

    fn layer_count(&self) -> u64 {
        self.layers.len().max(1) as u64
    }

    fn cells_per_layer(&self) -> u64 {
        // Saturating: hostile counts must not overflow before `validate` refuses them.
        self.grid.as_ref().map_or(0, |g| {
            g.counts
                .iter()
                .fold(1u64, |a, n| a.saturating_mul(u64::from(*n)))
        })
    }

    /// Zones of the scene, reserved ones included.
    pub fn zone_count(&self) -> u64 {
        match self.grid {
            None => 1 + self.reserved.len() as u64,
            Some(_) => self
                .cells_per_layer()
                .saturating_mul(self.layer_count())
                .saturating_add(self.reserved.len() as u64),
        }
    }

    /// Every zone id, cells first (layer by layer), then reserved zones.
    pub fn zones(&self) -> Vec<u32> {
        let cells = match self.grid {
            None => 1,
            Some(_) => self.cells_per_layer() * self.layer_count(),
        };
        (0..cells as u32)
            .chain((0..self.reserved.len() as u32).map(|i| RESERVED | i))
            .collect()
    }

    /// The zone a position on `layer` belongs to.
    pub fn zone_of(&self, layer: u8, p: [f32; 3]) -> u32 {
        if let Some(i) = self
            .reserved
            .iter()
            .position(|r| (0..3).all(|a| p[a] >= r.min[a] && p[a] <= r.max[a]))
        {
            return RESERVED | i as u32;
        }
        let Some(g) = &self.grid else {
            return WHOLE;
        };
        let layer = u64::from(layer).min(self.layer_count() - 1);
        let c = cell_of(g, p);
        let index = u64::from(c[0])
            + u64::from(g.counts[0]) * (u64::from(c[1]) + u64::from(g.counts[1]) * u64::from(c[2]));
        (layer * self.cells_per_layer() + index) as u32
    }

    /// A cell zone's (layer, cell coordinates); `None` for reserved zones, the whole scene and
    /// ids out of range.
    pub fn cell(&self, zone: u32) -> Option<(u8, [u32; 3])> {
        let g = self.grid.as_ref()?;
        let per = self.cells_per_layer();
        let zone = u64::from(zone);
        if zone & u64::from(RESERVED) != 0 || zone >= per * self.layer_count() {
            return None;
        }
        let (layer, mut i) = (zone / per, zone % per);
        let x = i % u64::from(g.counts[0]);
        i /= u64::from(g.counts[0]);
        let y = i % u64::from(g.counts[1]);
        let z = i / u64::from(g.counts[1]);
        Some((layer as u8, [x as u32, y as u32, z as u32]))
    }

    /// Whether two zones are neighbours: cells of one layer that touch (faces, edges or
    /// corners).
    pub fn adjacent(&self, a: u32, b: u32) -> bool {
        match (self.cell(a), self.cell(b)) {
            (Some((la, ca)), Some((lb, cb))) => {
                la == lb && a != b && (0..3).all(|i| ca[i].abs_diff(cb[i]) <= 1)
            }
            _ => false,
        }
    }

    /// What `scene.get` shows of a zone.
    pub fn info(&self, zone: u32) -> ZoneInfo {
        let mut info = ZoneInfo {
            zone,
            kind: "whole".into(),
            name: None,
            cell: None,
            min: None,
            max: None,
        };
        if zone & RESERVED != 0 {
            if let Some(r) = self.reserved.get((zone & !RESERVED) as usize) {
                info.kind = "reserved".into();
                info.name = Some(r.name.clone());
                info.min = Some(r.min.map(Some));
                info.max = Some(r.max.map(Some));
            }
        } else if let (Some(g), Some((layer, c))) = (&self.grid, self.cell(zone)) {
            info.kind = "cell".into();
            info.name = self.layers.get(usize::from(layer)).cloned();
            info.cell = Some(c);
            let edge =
                |i: usize, k: u32| (g.cell[i] > 0.0).then(|| g.origin[i] + g.cell[i] * k as f32);
            info.min = Some([edge(0, c[0]), edge(1, c[1]), edge(2, c[2])]);
            info.max = Some([edge(0, c[0] + 1), edge(1, c[1] + 1), edge(2, c[2] + 1)]);
        }
        info
    }
}

/// The cell of `p`, clamped into the grid.
fn cell_of(g: &Grid, p: [f32; 3]) -> [u32; 3] {
    let mut c = [0u32; 3];
    for i in 0..3 {
        if g.cell[i] > 0.0 {
            let k = ((p[i] - g.origin[i]) / g.cell[i]).floor();
            // `as` saturates (a NaN becomes 0); then clamp to the last cell.
            c[i] = (k.max(0.0) as u32).min(g.counts[i] - 1);
        }
    }
    c
}

#[cfg(test)]
mod tests;
