//! Properties shared by several fuzz targets.
pub mod foreign;
