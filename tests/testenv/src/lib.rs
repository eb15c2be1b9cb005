//! Real test environment for reckon (filled in below).
