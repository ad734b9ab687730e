//! The store contract suite (being written).
