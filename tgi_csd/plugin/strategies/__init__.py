"""The strategies tgi-csd ships, registered through entry points like a third party's."""
