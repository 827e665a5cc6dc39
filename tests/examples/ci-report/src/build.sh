#!/bin/sh
echo "artifact version 1"
