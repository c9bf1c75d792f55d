//! Approver CLI (being written).
