//! The embeddable L4 service API and its backends. Not built yet: see the apps issue.
#![deny(missing_docs)]
