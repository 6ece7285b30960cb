//! PLC operations and audit-log verification (being written).
