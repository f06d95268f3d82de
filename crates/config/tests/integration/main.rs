mod crd_schema;
mod errors;
mod parse_once;
mod scenario;
mod store;
