//! A table of durable records that remembers which rows a change touched, so the controller
//! can say exactly what to write to its log after each request: `changes` compares every
//! touched row with its value before the first touch and yields the rows that really changed
//! (a heartbeat that rewrites nothing durable yields nothing).

use std::collections::BTreeMap;
use std::ops::Index;

/// Rows keyed by id, with the ids touched since the last `changes`.
#[derive(Clone, Debug)]
pub(crate) struct Table<V> {
    rows: BTreeMap<u32, V>,
    /// Each touched id and its value before the first touch.
    touched: BTreeMap<u32, Option<V>>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            rows: BTreeMap::new(),
            touched: BTreeMap::new(),
        }
    }
}

impl<V: Clone + PartialEq> Table<V> {
    pub fn get(&self, id: &u32) -> Option<&V> {
        self.rows.get(id)
    }

    pub fn contains_key(&self, id: &u32) -> bool {
        self.rows.contains_key(id)
    }

    pub fn get_mut(&mut self, id: &u32) -> Option<&mut V> {
        let row = self.rows.get_mut(id)?;
        self.touched.entry(*id).or_insert_with(|| Some(row.clone()));
        Some(row)
    }

    pub fn insert(&mut self, id: u32, value: V) {
        let old = self.rows.insert(id, value);
        self.touched.entry(id).or_insert(old);
    }

    pub fn remove(&mut self, id: &u32) -> Option<V> {
        let old = self.rows.remove(id)?;
        self.touched.entry(*id).or_insert_with(|| Some(old.clone()));
        Some(old)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&u32, &V) -> bool) {
        let gone: Vec<u32> = self
            .rows
            .iter()
            .filter(|(id, v)| !keep(id, v))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.remove(&id);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u32, &V)> {
        self.rows.iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = &u32> {
        self.rows.keys()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.rows.values()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The rows that differ from before their first touch: `(id, Some(row))` for a new or
    /// changed row, `(id, None)` for a removed one. Forgets the touches.
    pub fn changes(&mut self) -> Vec<(u32, Option<V>)> {
        let touched = std::mem::take(&mut self.touched);
        touched
            .into_iter()
            .filter_map(|(id, before)| {
                let now = self.rows.get(&id);
                (now != before.as_ref()).then(|| (id, now.cloned()))
            })
            .collect()
    }

    /// Writes a row as a log or a replica says, without counting it as a change.
    pub fn put(&mut self, id: u32, value: Option<V>) {
        match value {
            Some(v) => self.rows.insert(id, v),
            None => self.rows.remove(&id),
        };
    }

    /// Every row, for a snapshot.
    pub fn rows(&self) -> &BTreeMap<u32, V> {
        &self.rows
    }

    /// A table holding `rows`, nothing touched.
    pub fn from_rows(rows: BTreeMap<u32, V>) -> Table<V> {
        Table {
            rows,
            touched: BTreeMap::new(),
        }
    }
}

impl<V: Clone + PartialEq> Index<&u32> for Table<V> {
    type Output = V;

    fn index(&self, id: &u32) -> &V {
        &self.rows[id]
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn changes_are_what_differs_from_before_the_first_touch() {
        let mut t = Table::default();
        t.insert(1, "a");
        t.insert(2, "b");
        assert_eq!(t.changes(), vec![(1, Some("a")), (2, Some("b"))]);
        // Touched but rewritten to the same value: nothing to log.
        *t.get_mut(&1).unwrap() = "x";
        *t.get_mut(&1).unwrap() = "a";
        // Inserted then removed within one change: nothing to log.
        t.insert(3, "c");
        t.remove(&3);
        t.remove(&2);
        assert_eq!(t.changes(), vec![(2, None)]);
        assert!(t.changes().is_empty());
        t.put(4, Some("d"));
        assert!(t.changes().is_empty(), "put is not a change");
        assert_eq!(t[&4], "d");
    }
}
