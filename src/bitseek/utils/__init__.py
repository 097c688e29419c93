"""Small general utilities that belong to no layer of the data flow."""
