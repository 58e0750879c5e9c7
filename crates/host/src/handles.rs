//! The per-instance tables behind a guest's resource handles (open key-value stores,
//! compare-and-swaps, SQLite connections): at most 256 live entries each, as Spin's
//! resource tables, a freed slot reused by the next insert.

/// Live entries one table holds at most.
pub const CAPACITY: usize = 256;

/// A table of handles to `T`.
pub struct Handles<T> {
    slots: Vec<Option<T>>,
}

impl<T> Default for Handles<T> {
    fn default() -> Self {
        Self { slots: Vec::new() }
    }
}

impl<T> Handles<T> {
    /// Stores `value`: its handle, or `None` when the table is full.
    pub fn insert(&mut self, value: T) -> Option<u32> {
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.slots.len() < CAPACITY => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return None,
        };
        self.slots[slot] = Some(value);
        u32::try_from(slot).ok()
    }

    /// The entry behind `handle`, if it is live.
    pub fn get(&self, handle: u32) -> Option<&T> {
        self.slots.get(handle as usize).and_then(Option::as_ref)
    }

    /// The entry behind `handle`, mutably.
    pub fn get_mut(&mut self, handle: u32) -> Option<&mut T> {
        self.slots.get_mut(handle as usize).and_then(Option::as_mut)
    }

    /// Frees `handle`, handing back its entry.
    pub fn remove(&mut self, handle: u32) -> Option<T> {
        self.slots.get_mut(handle as usize).and_then(Option::take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_reused() {
        let mut h = Handles::default();
        for i in 0..CAPACITY {
            assert_eq!(h.insert(i), Some(i as u32));
        }
        assert_eq!(h.insert(999), None, "full");
        assert_eq!(h.remove(3), Some(3));
        assert_eq!(h.get(3), None);
        assert_eq!(h.insert(7), Some(3), "the freed slot is reused");
        assert_eq!(h.get(3), Some(&7));
        assert_eq!(h.get(9999), None);
    }
}
