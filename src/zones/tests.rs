//! Geometry tests: zone of a position at cell edges, outside the grid, in reserved boxes; ids,
//! neighbours, validation of hostile geometries.

use super::*;

fn grid() -> Geometry {
    Geometry {
        grid: Some(Grid {
            origin: [-50.0, 0.0, -50.0],
            cell: [25.0, 0.0, 25.0],
            counts: [4, 1, 4],
        }),
        layers: vec!["ground".into(), "air".into()],
        reserved: vec![Reserved {
            name: "boss".into(),
            min: [0.0, -100.0, 0.0],
            max: [10.0, 100.0, 10.0],
        }],
    }
}

#[test]
fn a_position_belongs_to_its_cell_and_edges_belong_to_the_upper_cell() {
    let g = grid();
    g.validate().unwrap();
    assert_eq!(g.zone_count(), 33);
    assert_eq!(g.zones().len(), 33);
    assert_eq!(
        g.zone_of(0, [-50.0, 0.0, -50.0]),
        0,
        "the origin is cell (0,0,0)"
    );
    assert_eq!(g.zone_of(0, [-25.0001, 0.0, -50.0]), 0);
    assert_eq!(
        g.zone_of(0, [-25.0, 0.0, -50.0]),
        1,
        "an edge belongs to the upper cell"
    );
    assert_eq!(
        g.zone_of(0, [-50.0, 0.0, -25.0]),
        4,
        "z is the grid's second split axis"
    );
    assert_eq!(g.zone_of(0, [-50.0, 1e6, -25.0]), 4, "y is unsplit");
    assert_eq!(
        g.zone_of(1, [-50.0, 0.0, -50.0]),
        16,
        "layer 1 starts after layer 0's cells"
    );
    assert_eq!(
        g.zone_of(7, [-50.0, 0.0, -50.0]),
        16,
        "a layer past the last is the last"
    );
    // Outside the grid: the nearest border cell.
    assert_eq!(g.zone_of(0, [-1e9, 0.0, -1e9]), 0);
    assert_eq!(g.zone_of(0, [1e9, 0.0, 1e9]), 15);
    assert_eq!(
        g.zone_of(0, [f32::NAN, 0.0, 0.0]),
        g.zone_of(0, [-50.0, 0.0, 0.0])
    );
    // The reserved box wins over the cells it covers, on every layer, edges included.
    assert_eq!(g.zone_of(0, [5.0, 0.0, 5.0]), RESERVED);
    assert_eq!(g.zone_of(1, [10.0, 100.0, 0.0]), RESERVED);
    assert_eq!(
        g.zone_of(0, [10.01, 0.0, 5.0]),
        g.zone_of(0, [10.01, 0.0, 0.0])
    );
}

#[test]
fn zone_ids_map_back_to_cells_and_neighbours_touch() {
    let g = grid();
    assert_eq!(g.cell(0), Some((0, [0, 0, 0])));
    assert_eq!(g.cell(7), Some((0, [3, 0, 1])));
    assert_eq!(g.cell(21), Some((1, [1, 0, 1])));
    assert_eq!(g.cell(32), None, "past the last cell");
    assert_eq!(g.cell(RESERVED), None);
    assert!(g.adjacent(0, 1) && g.adjacent(0, 5) && !g.adjacent(0, 2));
    assert!(
        !g.adjacent(0, 16),
        "the same cell of another layer is not a neighbour"
    );
    assert!(!g.adjacent(0, 0));
    let info = g.info(5);
    assert_eq!(info.kind, "cell");
    assert_eq!(info.name.as_deref(), Some("ground"));
    assert_eq!(info.min, Some([Some(-25.0), None, Some(-25.0)]));
    assert_eq!(info.max, Some([Some(0.0), None, Some(0.0)]));
    assert_eq!(g.info(RESERVED).name.as_deref(), Some("boss"));
    let whole = Geometry::default();
    whole.validate().unwrap();
    assert_eq!(
        (whole.zones(), whole.zone_of(3, [1.0; 3])),
        (vec![WHOLE], WHOLE)
    );
    assert_eq!(whole.info(WHOLE).kind, "whole");
}

#[test]
fn impossible_geometries_are_refused_with_the_reason() {
    let refuse = |g: Geometry, what: &str| {
        let e = g.validate().unwrap_err();
        assert!(e.contains(what), "{e:?} lacks {what:?}");
    };
    let mut g = grid();
    g.grid.as_mut().unwrap().counts = [100, 1, 100];
    refuse(g, "at most 4096 zones");
    let mut g = grid();
    g.grid.as_mut().unwrap().counts = [u32::MAX, 1, u32::MAX];
    refuse(g, "zones");
    let mut g = grid();
    g.grid.as_mut().unwrap().counts[1] = 2;
    refuse(g, "axis 1");
    let mut g = grid();
    g.grid.as_mut().unwrap().cell[0] = f32::INFINITY;
    refuse(g, "axis 0");
    let mut g = grid();
    g.grid.as_mut().unwrap().counts[2] = 0;
    refuse(g, "axis 2");
    let mut g = grid();
    g.layers = (0..9).map(|i| i.to_string()).collect();
    refuse(g, "layers");
    let mut g = grid();
    g.layers[1] = " ".into();
    refuse(g, "layer name");
    let mut g = grid();
    g.reserved[0].min[0] = 20.0;
    refuse(g, "min <= max");
    let mut g = grid();
    g.reserved = vec![g.reserved[0].clone(); 65];
    refuse(g, "reserved zones");
    let json = r#"{"grid": {"origin": [0,0,0], "cell": [1,1,1], "counts": [2,2,2]}, "extra": 1}"#;
    assert!(
        serde_json::from_str::<Geometry>(json).is_err(),
        "unknown fields are refused"
    );
}
