import streamlit as st

st.title("Label")
st.info("Coming soon.")
