package tenancy

// UnknownHosts is how many unknown hosts a resolver remembers, for tests.
const UnknownHosts = unknownHosts
