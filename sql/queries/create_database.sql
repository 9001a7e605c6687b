-- {database} is replaced by the quoted database name (an identifier cannot be a parameter).
CREATE DATABASE {database}
