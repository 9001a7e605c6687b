-- {database} is replaced by the quoted database name (an identifier cannot be a parameter).
DROP DATABASE IF EXISTS {database} WITH (FORCE)
