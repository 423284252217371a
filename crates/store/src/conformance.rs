//! The shared test suite every [`crate::Store`] implementation must pass.
